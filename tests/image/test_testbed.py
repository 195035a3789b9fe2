"""The testbed keeps its contract (docs/testbed.md, "The testbed"): what the Ansible tests, the demo and CI rely on.

Read-only against the shared testbed (a deploy may run on it meanwhile); the negative checks of the helpers
(cloudflared stand-in states, the TCP forwarder) run on private instances on ephemeral loopback ports.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.image.conftest import ROOT, http_get, run

CONTRACT_KEYS = [
    *("TESTBED_DIR", "REGISTRY", "REGISTRY_USER", "REGISTRY_PASSWORD_FILE", "IMAGE_REPOSITORY"),
    *("SSH_HOST", "SSH_PORT", "SSH_USER", "SSH_KEY", "SSH_KNOWN_HOSTS"),
    *("OLLAMA_KIND", "OLLAMA_HOST_URL", "OLLAMA_CONTAINER_URL", "MODEL_NAME"),
    *("CLOUDFLARED_METRICS_URL", "CLOUDFLARED_CONFIG", "BASE_IMAGE", "BUILD_BASE_IMAGE", "PROXY_IMAGE"),
    "WHEELHOUSE",
]


def ssh(testbed: dict[str, str], *command: str, known_hosts: str | None = None) -> subprocess.CompletedProcess:
    return run(
        "ssh", "-p", testbed["SSH_PORT"], "-i", testbed["SSH_KEY"],
        "-o", f"UserKnownHostsFile={known_hosts or testbed['SSH_KNOWN_HOSTS']}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{testbed['SSH_USER']}@{testbed['SSH_HOST']}", *command,
        check=False,
    )  # fmt: skip


def test_env_file_has_every_contract_key(testbed):
    missing = [key for key in CONTRACT_KEYS if not testbed.get(key)]
    assert missing == []
    assert testbed["OLLAMA_KIND"] in ("double", "real")
    assert Path(testbed["TESTBED_DIR"]) == (ROOT / ".testbed").resolve()


def test_build_base_image_is_the_base_image_plus_binutils(testbed):
    # The Dockerfile's build stage runs on it with --network none (scripts/build-push.sh): it must already have strip.
    def has_strip(image: str) -> bool:
        return run("docker", "run", "--rm", image, "sh", "-c", "command -v strip", check=False).returncode == 0

    assert has_strip(testbed["BUILD_BASE_IMAGE"])
    assert not has_strip(testbed["BASE_IMAGE"])  # the runtime stage's base stays as slim as python:3.12-slim
    base_id = run("docker", "image", "inspect", "-f", "{{.Id}}", testbed["BASE_IMAGE"]).stdout.strip()
    label = '{{index .Config.Labels "io.local-llm-server.base-id"}}'
    assert run("docker", "image", "inspect", "-f", label, testbed["BUILD_BASE_IMAGE"]).stdout.strip() == base_id


def test_proxy_image_is_the_base_image_plus_nginx(testbed):
    # Each stack's proxy runs `nginx -c <our config> -g 'daemon off;'` (compose.yml.j2): nginx must be on PATH, and
    # its own packaging must not have left a service running or a default site it would serve.
    version = run("docker", "run", "--rm", testbed["PROXY_IMAGE"], "nginx", "-v", check=False)
    assert version.returncode == 0 and "nginx/" in version.stderr, version
    assert run("docker", "run", "--rm", testbed["BASE_IMAGE"], "sh", "-c", "command -v nginx", check=False).returncode
    base_id = run("docker", "image", "inspect", "-f", "{{.Id}}", testbed["BASE_IMAGE"]).stdout.strip()
    label = '{{index .Config.Labels "io.local-llm-server.base-id"}}'
    assert run("docker", "image", "inspect", "-f", label, testbed["PROXY_IMAGE"]).stdout.strip() == base_id
    policy = run("docker", "run", "--rm", testbed["PROXY_IMAGE"], "test", "-e", "/usr/sbin/policy-rc.d", check=False)
    assert policy.returncode != 0, "the build-time policy-rc.d must not stay in the image"


def test_registry_password_file_is_private(testbed):
    mode = os.stat(testbed["REGISTRY_PASSWORD_FILE"]).st_mode & 0o777
    assert mode == 0o600


def test_registry_requires_login(testbed):
    url = f"http://{testbed['REGISTRY']}/v2/"
    assert http_get_status(url) == 401
    password = Path(testbed["REGISTRY_PASSWORD_FILE"]).read_text().strip()
    request = urllib.request.Request(url)
    token = base64.b64encode(f"{testbed['REGISTRY_USER']}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
        assert response.status == 200
    request.add_header("Authorization", "Basic " + base64.b64encode(b"ci:wrong").decode())
    assert http_get_status(request) == 401


def http_get_status(url_or_request) -> int:
    try:
        with urllib.request.urlopen(url_or_request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_ssh_mac_mini_with_pinned_host_key_and_docker(testbed):
    result = ssh(testbed, "id -nG; docker version -f '{{.Server.Version}}'; docker compose version --short")
    assert result.returncode == 0, result.stderr
    groups, server, compose = result.stdout.split("\n")[:3]
    assert "docker" in groups.split()
    assert server and compose
    # The pinned line is exact: "[127.0.0.1]:2222 ssh-ed25519 AAAA..."
    line = Path(testbed["SSH_KNOWN_HOSTS"]).read_text().strip()
    assert line.startswith(f"[{testbed['SSH_HOST']}]:{testbed['SSH_PORT']} ssh-ed25519 AAAA")


def test_ssh_refuses_an_unknown_host_key(testbed, tmp_path):
    # Host key checking stays on: with a different pinned key the client refuses to connect.
    other = tmp_path / "other_key"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{testbed['SSH_HOST']}]:{testbed['SSH_PORT']} {other.with_suffix('.pub').read_text()}")
    result = ssh(testbed, "true", known_hosts=str(wrong))
    assert result.returncode != 0
    assert "host key" in result.stderr.lower(), result.stderr


def test_deploy_user_has_python_docker_and_requests(testbed):
    # community.docker's docker_login/docker_image_info run on the target with these.
    result = ssh(testbed, "/usr/bin/python3 -c 'import docker, requests; print(\"ok\")'")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr


def test_ollama_reachable_from_host_and_from_containers(testbed, built_image):
    status, body = http_get(f"{testbed['OLLAMA_HOST_URL']}/api/version")
    assert status == 200 and body.get("version")
    probe = (
        "import json, sys, urllib.request\n"
        "print(json.load(urllib.request.urlopen(sys.argv[1] + '/api/tags', timeout=5))['models'][0]['name'])\n"
    )
    out = run(
        "docker", "run", "--rm", "--add-host", "host.docker.internal:host-gateway", "--entrypoint", "python3",
        built_image.ref, "-c", probe, testbed["OLLAMA_CONTAINER_URL"],
    ).stdout.strip()  # fmt: skip
    assert out.split(":")[0] == testbed["MODEL_NAME"].split(":")[0]


def test_cloudflared_standin_ready_and_config(testbed):
    status, body = http_get(f"{testbed['CLOUDFLARED_METRICS_URL']}/ready")
    assert status in (200, 503)  # a negative test elsewhere may have flipped it; the shape is what counts here
    assert set(body) == {"status", "readyConnections", "connectorId"}
    config = yaml.safe_load(Path(testbed["CLOUDFLARED_CONFIG"]).read_text())
    assert config["metrics"] == testbed["CLOUDFLARED_METRICS_URL"].removeprefix("http://")
    rules = config["ingress"]
    assert rules[-1] == {"service": "http_status:404"}  # cloudflared requires a catch-all last
    services = {rule.get("hostname"): rule["service"] for rule in rules[:-1]}
    # One rule per environment of the table: its public hostname to its loopback port.
    table = yaml.safe_load((ROOT / "environments.yml").read_text())["environments"]
    assert services == {env["hostname"]: f"http://localhost:{env['port']}" for env in table.values()}


def start_helper(*argv: str) -> tuple[subprocess.Popen, int]:
    """Start a testbed helper on port 0 and read the real port from its first line."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"127\.0\.0\.1:(\d+)", line)  # the first address printed is the one it listens on
    assert match, f"{argv[0]} printed {line!r}"
    port = int(match.group(1))
    return proc, port


def test_cloudflared_standin_states(tmp_path):
    state = tmp_path / "state.json"
    proc, port = start_helper("testbed/cloudflared_standin.py", "--port", "0", "--state-file", str(state))
    try:
        url = f"http://127.0.0.1:{port}/ready"
        status, body = http_get(url)
        assert (status, body["status"], body["readyConnections"]) == (200, 200, 1)
        state.write_text(json.dumps({"ready_connections": 0}))
        status, body = http_get(url)
        assert (status, body["status"], body["readyConnections"]) == (503, 503, 0)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/_standin/state", data=b'{"ready_connections": 4}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310 (loopback)
            pass
        assert http_get(url)[1]["readyConnections"] == 4
        assert json.loads(state.read_text()) == {"ready_connections": 4}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tcp_forwarder_relays_both_ways():
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen()
        target = upstream.getsockname()[1]
        proc, port = start_helper("testbed/tcp_forward.py", "127.0.0.1:0", f"127.0.0.1:{target}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                conn, _ = upstream.accept()
                with conn:
                    client.sendall(b"ping")
                    assert conn.recv(4) == b"ping"
                    conn.sendall(b"pong")
                    assert client.recv(4) == b"pong"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_testbed_processes_listen_only_on_loopback_or_the_bridge(testbed):
    gateway = testbed["DOCKER_BRIDGE_GATEWAY"]
    pids = {
        int(p.read_text())
        for p in (Path(testbed["TESTBED_DIR"]) / "run").glob("*.pid")
        if p.read_text().strip().isdigit()
    }
    if not pids:
        pytest.fail("no pid files in .testbed/run: up.sh started nothing?")
    out = run("ss", "-H", "-ltnp").stdout
    seen = []
    for line in out.splitlines():
        fields = line.split()
        local, users = fields[3], " ".join(fields[5:])
        if any(f"pid={pid}," in users for pid in pids):
            addr = local.rsplit(":", 1)[0].strip("[]")
            seen.append(local)
            assert addr == gateway or addr.startswith("127."), f"testbed process listens on {local}: {users}"
    assert seen, "found none of the testbed's listening sockets"


def test_up_uses_an_engine_that_answers_and_installs_no_engine_package(testbed, tmp_path):
    # GitHub's ubuntu-24.04 runner: Docker CE's engine runs and Debian's docker.io is not installed. Installing it
    # would pull in containerd, which conflicts with Docker CE's containerd.io (eunomia-bpf/eunomia-bpf#302), so
    # up.sh must use the engine as it is. Stand in for that machine with a dpkg-query that says docker.io is absent
    # (the real engine answers meanwhile), and an apt-get that records being called and fails.
    shims = tmp_path / "bin"
    shims.mkdir()
    calls = tmp_path / "apt-get.calls"
    real_dpkg_query = run("sh", "-c", "command -v dpkg-query").stdout.strip()
    (shims / "dpkg-query").write_text(
        "#!/bin/sh\n"
        'for arg; do [ "$arg" = docker.io ] && { echo "no packages found matching docker.io" >&2; exit 1; }; done\n'
        f'exec {real_dpkg_query} "$@"\n'
    )
    (shims / "apt-get").write_text(f'#!/bin/sh\necho "$@" >>{calls}\nexit 100\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)

    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    up = subprocess.run(["bash", str(ROOT / "testbed" / "up.sh")], env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    assert "Docker engine answers: no engine package is installed" in up.stdout
    assert "Docker engine: reusing the running one" in up.stdout
    assert not calls.exists(), f"up.sh ran apt-get: {calls.read_text()}"
