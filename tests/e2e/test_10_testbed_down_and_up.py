"""The testbed's own life cycle: `testbed/down.sh` removes exactly what `up.sh` made, and `up.sh` brings the testbed
back from its caches (base images, wheelhouse).

What down.sh removes takes what depends on it along: the deploy user it made goes with its home, so the stacks
deployed from that home go too (down.sh says so), and nothing is left half-alive (no container restart-looping on a
bind mount whose source went with the home). up.sh then makes the user's home the user's own whatever an earlier run
left there, and a deploy works again. (A reboot, where the user and its files stay, is test_09's property.)
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e import harness

# What the testbed serves on loopback (docs/testbed.md, "The testbed"): registry, the "Mac Mini"'s sshd, Ollama,
# cloudflared.
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


def test_down_removes_what_up_made_and_up_brings_it_back(testbed, ansible, images):
    harness.ensure_serving(ansible, images.first)
    tb = Path(testbed["TESTBED_DIR"])
    made = harness.manifest()
    # up.sh lists a deploy user it (or an earlier testbed) made; a user someone else made is not its to remove.
    user_is_ours = "user deploy" in made
    home = Path("/home/deploy")
    processes = {path.stem: int(path.read_text()) for path in (tb / "run").glob("*.pid")}
    running = {name: (pid, cmdline) for name, pid in processes.items() if (cmdline := _cmdline(pid))}
    assert {"registry", "sshd", "ollama-double", "cloudflared-standin"} <= running.keys(), running

    down = harness.run(["bash", str(harness.ROOT / "testbed" / "down.sh")])
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    still = [name for name, (pid, cmdline) in running.items() if _cmdline(pid) == cmdline]
    assert not still, f"down.sh left running: {still}"
    assert [name for name, port in TESTBED_PORTS.items() if not _refused(port)] == []
    user_left = harness.run(["id", "deploy"]).returncode == 0
    assert user_left is not user_is_ours, f"deploy user left: {user_left}; down.sh said:\n{down.stdout}"
    if user_is_ours:
        assert not home.exists(), "the user's home must go with the user"
        # The stacks deployed from that home went with it, and down.sh said so.
        assert "user deploy: removed the stacks deployed under /home/deploy with it" in down.stdout, down.stdout
        assert all(project in down.stdout for project in harness.PROJECTS.values()), down.stdout
    # Only the caches stay, and the manifest names nothing but them.
    left = {path.name for path in tb.iterdir()}
    assert "wheelhouse" in left and left <= {"wheelhouse", "manifest"}, left  # no manifest: nothing to keep
    kept = (tb / "manifest").read_text().splitlines() if "manifest" in left else []
    # (A base image is listed only when this testbed made it; one found already made is not this testbed's to purge.)
    assert all(line.split()[0] in ("cache-image", "cache-dir") for line in kept), kept

    if user_is_ours:
        # What an earlier run could leave in a removed user's home: Docker re-creates a missing bind-mount source as
        # root (a proxy restart-looping while the user was gone). useradd reuses such a home without owning it.
        (harness.DEPLOY_HOME / "staging" / "proxy").mkdir(parents=True)

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
    # Everything in the deploy user's home is the user's own.
    foreign = harness.run(["find", str(home), "!", "-user", "deploy"])
    assert foreign.returncode == 0 and foreign.stdout == "", foreign.stdout
    if user_is_ours:
        # Nothing half-alive: no container of either stack came back without its files.
        assert [harness.project_containers(app_env) for app_env in harness.PORTS] == [[], []]

    # A deploy works again. The registry is a new one (its data went with the state), so push a release first.
    tag = harness.build_push("e2e-after-up")
    result = harness.Ansible(env).deploy("staging", tag)
    assert result.returncode == 0, result.output[-4000:]
    assert harness.health("staging") == {"status": "ok", "env": "staging", "version": tag}
