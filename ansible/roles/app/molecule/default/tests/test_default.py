"""The `app` role only defines defaults; verify the host facts those defaults rely on."""


def test_default_docker_socket_is_usable_by_the_deploy_user(host):
    # app_docker_host defaults to unix:///var/run/docker.sock; the deploy user reaches it through group docker.
    assert host.file("/var/run/docker.sock").is_socket
    assert "docker" in host.user().groups


def test_deploy_user_has_a_home_for_app_root(host):
    assert host.file(host.user().home).is_directory
