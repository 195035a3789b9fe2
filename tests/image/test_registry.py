"""Push to and pull from the testbed registry (ghcr.io's stand-in) with a real login.

Runs after the modules whose containers use the image (pytest runs modules in file order), so removing the
local tags never conflicts with a running container of this session.
"""

from __future__ import annotations

from tests.image.conftest import inspect, run


def test_push_and_pull_back_with_login(built_image, docker_config, tmp_path):
    image_id = built_image.image_id  # as built, before anything could untag it
    staging = f"{built_image.repository}:staging"
    for ref in (built_image.ref, staging):
        run("docker", "image", "rm", ref, check=False)  # untag the local copies...
        assert run("docker", "image", "inspect", ref, check=False).returncode != 0
    # ...a client without credentials is refused (htpasswd auth is on)...
    anon = run("docker", "pull", built_image.ref, env={"DOCKER_CONFIG": str(tmp_path)}, check=False)
    assert anon.returncode != 0, "the registry let an anonymous client pull"
    assert "auth" in anon.stderr.lower(), anon.stderr
    # ...and the logged-in client gets the immutable tag back as the very image that was built. (:staging is
    # moved by every build, possibly by another suite meanwhile, so only its presence is checked.)
    run("docker", "pull", built_image.ref, env=docker_config)
    assert inspect(built_image.ref, "image")["Id"] == image_id
    run("docker", "pull", staging, env=docker_config)
    assert inspect(staging, "image")["RepoDigests"]
