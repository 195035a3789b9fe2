"""The testbed's own life cycle, last in the tier because it takes the testbed down.

`testbed/down.sh` must stop and remove exactly what `up.sh` made and keep the caches (base images, wheelhouse);
`up.sh` from there must bring everything back, reusing those caches. Where up.sh started the Docker engine (CI,
a fresh machine), down stops it, which makes this also the engine restart a Mac sees when Docker Desktop restarts:
the stacks (`restart: always`) must come back by themselves, still serving their releases.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from tests.e2e import harness

# What the testbed serves on loopback (README "The testbed"): registry, the "Mac Mini"'s sshd, Ollama, cloudflared.
TESTBED_PORTS = {"registry": 5000, "sshd": 2222, "Ollama double": 11434, "cloudflared stand-in": 20241}


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None  # not running


def _serving_versions() -> dict[str, str]:
    versions = {}
    for app_env, port in harness.PORTS.items():
        status, body = harness.http_get(f"http://127.0.0.1:{port}/health")
        if status == 200:
            versions[app_env] = json.loads(body)["version"]
    return versions


def test_down_removes_what_up_made_and_up_brings_it_back(testbed, ansible, images):
    if not _serving_versions():  # run on its own: give the engine restart something to bring back
        assert ansible.deploy("staging", images.first).returncode == 0
    before = _serving_versions()
    tb = Path(testbed["TESTBED_DIR"])
    made = (tb / "manifest").read_text().splitlines()
    engine_is_ours = "proc dockerd" in made
    processes = {path.stem: int(path.read_text()) for path in (tb / "run").glob("*.pid")}
    running = {name: (pid, cmdline) for name, pid in processes.items() if (cmdline := _cmdline(pid))}
    assert {"registry", "sshd", "ollama-double", "cloudflared-standin"} <= running.keys(), running

    down = harness.run(["bash", str(harness.ROOT / "testbed" / "down.sh")])
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    still = [name for name, (pid, cmdline) in running.items() if _cmdline(pid) == cmdline]
    assert not still, f"down.sh left running: {still}"
    assert [name for name, port in TESTBED_PORTS.items() if not _refused(port)] == []
    # The deploy user goes if up.sh made it (a user that was there before is not the testbed's to remove).
    user_left = harness.run(["id", "deploy"]).returncode == 0
    assert user_left is ("user deploy" not in made), f"deploy user left: {user_left}; down.sh said:\n{down.stdout}"
    if engine_is_ours:
        assert _serving_versions() == {}, "down.sh stopped the engine, yet a stack still answers"
    # Only the caches stay, and the manifest names nothing but them.
    left = {path.name for path in tb.iterdir()}
    assert "wheelhouse" in left and left <= {"wheelhouse", "manifest"}, left  # no manifest: nothing to keep
    kept = (tb / "manifest").read_text().splitlines() if "manifest" in left else []
    # (A base image is listed only when this testbed made it; one found already made is not this testbed's to purge.)
    assert all(line.split()[0] in ("cache-image", "cache-dir") for line in kept), kept

    up = harness.run(["bash", str(harness.ROOT / "testbed" / "up.sh")])
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    for cached in (
        f"base image {testbed['BASE_IMAGE']}: cached",
        f"build base image {testbed['BUILD_BASE_IMAGE']}: cached",
        f"proxy image {testbed['PROXY_IMAGE']}: cached",
        "wheelhouse: up to date",
    ):
        assert cached in up.stdout, f"{cached!r} not in up.sh's output:\n{up.stdout}"
    env = harness.testbed_up()  # a second run finds everything running, and puts the cloudflared config back
    for key in ("REGISTRY", "IMAGE_REPOSITORY", "SSH_PORT", "OLLAMA_KIND"):
        assert env[key] == testbed[key], key
    assert [name for name, port in TESTBED_PORTS.items() if _refused(port)] == []

    if engine_is_ours:
        # The engine was stopped with the stacks in it and started again: restart: always brings them back.
        deadline = time.monotonic() + 60
        while _serving_versions() != before and time.monotonic() < deadline:
            time.sleep(0.5)
    assert _serving_versions() == before
