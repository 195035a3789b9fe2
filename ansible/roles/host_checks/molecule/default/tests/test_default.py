"""host_checks only reads; verify independently what it asserted about the testbed's "Mac Mini"."""


def test_compose_plugin_is_at_least_2_18(host):
    version = host.check_output("docker compose version --short").lstrip("v")
    assert tuple(int(p) for p in version.split(".")[:2]) >= (2, 18)


def test_deploy_user_can_talk_to_docker(host):
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0
