"""Stand-in for cloudflared's metrics server, which the deploy checks before and after a release.

Real cloudflared serves `GET /ready` on its metrics address (pinned to 127.0.0.1:20241 in config.yml):
200 `{"status":200,"readyConnections":N,"connectorId":"..."}` while at least one edge connection is up,
503 with the same shape otherwise (cloudflare/cloudflared metrics/readiness.go;
https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/monitor-tunnels/metrics/).
Nothing here can reach Cloudflare's edge, so this process answers the same way, driven by a state file that
tests may edit:

    {"ready_connections": 0}        -> 503, readyConnections 0
    {"ready_connections": 4}        -> 200, readyConnections 4
    {"status": 500}                 -> that status with the usual body (broken metrics server)

The file is re-read on every request, so a test can flip the state and restore it without restarts.
`POST /_standin/state` with the same JSON writes the file (handy from a playbook or curl).
"""

from __future__ import annotations

import argparse
import json
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_STATE = {"ready_connections": 1}


class _Handler(BaseHTTPRequestHandler):
    server: _StandinServer

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        if self.path == "/ready":
            state = self.server.read_state()
            ready = int(state.get("ready_connections", 1))
            status = int(state.get("status", 200 if ready > 0 else 503))
            self._send_json(
                status,
                {"status": status, "readyConnections": ready, "connectorId": self.server.connector_id},
            )
        elif self.path == "/metrics":
            # The one gauge a human would look at; real cloudflared exports many more.
            ready = int(self.server.read_state().get("ready_connections", 1))
            text = f"# TYPE cloudflared_tunnel_ha_connections gauge\ncloudflared_tunnel_ha_connections {ready}\n"
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/_standin/state":
            self._send_json(200, self.server.read_state())
        else:
            self._send_json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/_standin/state":
            self._send_json(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            state = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(state, dict):
                raise ValueError("state must be a JSON object")
        except ValueError as exc:
            self._send_json(400, {"error": str(exc)})
            return
        self.server.write_state(state)
        self._send_json(200, state)

    def log_message(self, format: str, *args: object) -> None:  # quieter than the default stderr line
        pass


class _StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default listen backlog of 5 drops bursts of health polls

    def __init__(self, address: tuple[str, int], state_file: Path) -> None:
        super().__init__(address, _Handler)
        self.state_file = state_file
        self.connector_id = str(uuid.uuid4())

    def read_state(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
            return state if isinstance(state, dict) else dict(DEFAULT_STATE)
        except (OSError, ValueError):
            return dict(DEFAULT_STATE)

    def write_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=20241)
    parser.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args(argv)
    server = _StandinServer((args.host, args.port), args.state_file)
    host, port = server.server_address[:2]  # the real port when --port 0 (tests)
    print(f"cloudflared stand-in on http://{host}:{port}/ready (state {args.state_file})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
