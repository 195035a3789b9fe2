"""docker-compose.local.yml: builds from the checkout, mounts service/app, reloads on edits, APP_ENV=local.

Runs on a temporary copy of the build context, so the edit that proves the reload never touches the real tree.
"""

from __future__ import annotations

import shutil
import socket

import pytest

from tests.image.conftest import ROOT, http_get, inspect, run, wait_for

CONTEXT = ["Dockerfile", ".dockerignore", "requirements.txt", "docker-compose.local.yml", "service/app", "docker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_stack(testbed, tmp_path_factory):
    copy = tmp_path_factory.mktemp("local") / "repo"
    for rel in CONTEXT:
        src, dst = ROOT / rel, copy / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    shutil.copytree(testbed["WHEELHOUSE"], copy / ".testbed" / "wheelhouse")
    port = free_port()
    env = {
        **{key: testbed[key] for key in ("BASE_IMAGE", "BUILD_BASE_IMAGE")},
        **{"BUILD_WHEELHOUSE": ".testbed/wheelhouse", "LOCAL_PORT": str(port)},
    }

    def compose(*args: str, check: bool = True):
        return run("docker", "compose", "-f", "docker-compose.local.yml", "-p", "imgtest-local", *args,
                   env=env, cwd=copy, check=check)  # fmt: skip

    try:
        compose("up", "-d", "--build", "--wait", "--wait-timeout", "120")
        yield copy, port, compose
    finally:
        compose("down", "--volumes", "--remove-orphans", "--rmi", "all", "--timeout", "5", check=False)


def test_local_stack_builds_and_serves_in_local_mode(local_stack):
    copy, port, compose = local_stack
    status, body = http_get(f"http://127.0.0.1:{port}/health")
    assert (status, body["env"], body["version"]) == (200, "local", "local")
    container = inspect(compose("ps", "-q", "api").stdout.strip())
    assert "--reload" in container["Config"]["Cmd"]
    mounts = {m["Destination"]: m for m in container["Mounts"]}
    assert mounts["/app/service/app"]["Source"] == str(copy / "service" / "app")
    assert mounts["/app/service/app"]["RW"] is False
    assert container["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"


def test_editing_the_mounted_source_reloads_the_server(local_stack):
    copy, port, _ = local_stack
    url = f"http://127.0.0.1:{port}/_imgtest_reload"
    assert http_get(url)[0] == 404
    with (copy / "service" / "app" / "main.py").open("a") as f:
        f.write('\n\n@app.get("/_imgtest_reload")\ndef _imgtest_reload() -> dict:\n    return {"reloaded": True}\n')
    # uvicorn's reloader polls file times (about every 0.25 s), then restarts the worker: seconds at most.
    body = wait_for(lambda: (r := http_get(url, timeout=2))[0] == 200 and r[1], 60, "the route after a reload", 0.5)
    assert body == {"reloaded": True}
