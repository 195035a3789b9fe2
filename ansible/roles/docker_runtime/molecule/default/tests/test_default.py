"""docker_runtime: the service account can use the engine (set-up), and what its check asserted about the testbed's
"Mac Mini", checked independently."""


def test_compose_plugin_is_at_least_2_18(host):
    version = host.check_output("docker compose version --short").lstrip("v")
    assert tuple(int(p) for p in version.split(".")[:2]) >= (2, 18)


def test_deploy_user_can_talk_to_docker(host):
    assert host.run("docker info --format '{{.ServerVersion}}'").rc == 0


def test_the_service_account_is_in_the_docker_group(host):
    assert "docker" in host.user("deploy").groups
