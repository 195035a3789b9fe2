"""testbed/up.sh uses a real Ollama when one already answers on 127.0.0.1:11434 (the brief: the demo then uses it).

A real Ollama cannot be installed here, so for the length of this test the testbed's double is stopped and a
stand-in that is *not* the double (it has Ollama's /api/version and /api/tags, no /_double/* control API, and
listens on loopback only, like `ollama serve`) takes its port. up.sh must say it found a real Ollama, record
OLLAMA_KIND=real, and forward the Docker bridge address to it, because Linux containers cannot reach a server bound
to 127.0.0.1. Afterwards the stand-in and the forwarder are stopped and up.sh starts the double again; the tiers
after this one (molecule, e2e) run against the double, so a failed restore fails them loudly.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.image.conftest import ROOT, parse_env_file, run, wait_for

OLLAMA_PORT = 11434
STANDIN_VERSION = "0.0.0-not-the-double"


class _RealOllamaStandIn(BaseHTTPRequestHandler):
    """What up.sh can see of a real Ollama: its version and model list; no /_double/* routes."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        answers = {"/api/version": {"version": STANDIN_VERSION}, "/api/tags": {"models": []}}
        body = answers.get(self.path)
        status = 200 if body is not None else 404
        payload = json.dumps(body if body is not None else {"error": "404 page not found"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def _stop_testbed_process(testbed: dict[str, str], name: str, cmdline_part: str) -> None:
    """Stop one process up.sh started (pid file checked against its command line, as down.sh does)."""
    pidfile = Path(testbed["TESTBED_DIR"]) / "run" / f"{name}.pid"
    if not pidfile.is_file():
        return
    pid = int(pidfile.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return  # not running
    if cmdline_part not in cmdline:
        return  # the pid was reused by something else
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 15, f"{name} (pid {pid}) to stop")


def _up() -> tuple[str, dict[str, str]]:
    result = run("bash", "testbed/up.sh", check=False, timeout=600)
    assert result.returncode == 0, f"testbed/up.sh failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout, parse_env_file(ROOT / ".testbed" / "env")


def _version_from_a_container(testbed: dict[str, str]) -> str:
    script = (
        "import json, urllib.request\n"
        f"print(json.load(urllib.request.urlopen('{testbed['OLLAMA_CONTAINER_URL']}/api/version', timeout=5))"
        "['version'])\n"
    )
    return run(
        "docker", "run", "--rm", "--add-host", "host.docker.internal:host-gateway", testbed["BASE_IMAGE"],
        "python3", "-c", script,
    ).stdout.strip()  # fmt: skip


def test_up_uses_a_real_ollama_that_already_answers(testbed):
    assert testbed["OLLAMA_KIND"] == "double", "this test swaps the testbed's double for a stand-in"
    server = None
    try:
        _stop_testbed_process(testbed, "ollama-double", "tests.fakes.ollama")
        # The stand-in binds the port the double just left (HTTPServer sets SO_REUSEADDR).
        server = ThreadingHTTPServer(("127.0.0.1", OLLAMA_PORT), _RealOllamaStandIn)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        output, env = _up()
        assert f"a REAL Ollama answers on 127.0.0.1:{OLLAMA_PORT}; using it instead of the double" in output
        assert f"Ollama      real on http://127.0.0.1:{OLLAMA_PORT}" in output  # the summary says so too
        assert env["OLLAMA_KIND"] == "real"
        gateway = env["DOCKER_BRIDGE_GATEWAY"]
        assert f"forwarding {gateway}:{OLLAMA_PORT} -> 127.0.0.1:{OLLAMA_PORT} for containers" in output
        # Containers reach the loopback-only server through that forwarder, at the URL the stacks use.
        assert _version_from_a_container(env) == STANDIN_VERSION
        # A second run reuses what runs and changes its mind about nothing.
        again, env_again = _up()
        assert "a REAL Ollama answers" in again and "forwarding" not in again
        assert env_again["OLLAMA_KIND"] == "real"
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        _stop_testbed_process(testbed, "ollama-forward", "tcp_forward.py")
        time.sleep(0.2)  # let the forwarder's listening socket go before the double binds the bridge address
        output, env = _up()
    assert "Ollama double: started" in output, output
    assert env["OLLAMA_KIND"] == "double"
    assert _version_from_a_container(env) != STANDIN_VERSION
