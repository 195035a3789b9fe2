"""The staging and production stacks, rendered from the deploy role's template and run side by side.

The template (ansible/roles/release/templates/compose.yml.j2) is rendered with Jinja2 directly, with the role's
literal defaults and the per-environment values a deploy derives. Project names start with "imgtest-" and the ports
are 18001/18000, so a real deploy on the testbed (llm-staging/llm-production) is never touched by these tests.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.e2e import harness
from tests.image.conftest import ROOT, http_get, inspect, run, wait_for

TEMPLATES = ROOT / "ansible/roles/release/templates"


def _literal_defaults(role: str) -> dict:
    """A role's defaults that are plain values (the derived, Jinja-templated ones are set per stack below)."""
    defaults = yaml.safe_load((ROOT / "ansible" / "roles" / role / "defaults" / "main.yml").read_text())
    return {k: v for k, v in defaults.items() if not (isinstance(v, str) and "{{" in v)}


DEFAULTS = {**_literal_defaults("app"), **_literal_defaults("release")}
API_PORT = DEFAULTS["release_container_port"]  # uvicorn's port in the api container (the image's CMD)
PROXY_PORT = DEFAULTS["release_proxy_container_port"]
STACKS = {"staging": 18001, "production": 18000}


def stack_files(env: str, port: int, project: str, image_repository: str, app_dir: str, proxy_image: str,
                slots: dict[str, dict[str, str]], live_color: str, **extra) -> dict[str, str]:  # fmt: skip
    """compose.yml and proxy/nginx.conf ({path under app_dir: text}) as the role renders them for the api colours in
    slots ({colour: {"tag": ..., "release": ...}}), the proxy sending to live_color. app_dir: the stack's directory
    on the host that runs it. Also used by bench/direct.py."""
    # YAML and nginx syntax, not HTML: no autoescaping (Ansible's template module does not escape either).
    jinja = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # noqa: S701
    variables = dict(
        DEFAULTS,
        app_env=env,
        release_compose_project=project,
        release_port=port,
        release_dir=app_dir,
        release_proxy_image=proxy_image,
        image_repository=image_repository,
        app_slots=slots,
        live_color=live_color,
        release_env_file=f"{app_dir}/.env.{env}",
        **extra,
    )
    return {
        "proxy/nginx.conf": jinja.from_string((TEMPLATES / "nginx.conf.j2").read_text()).render(variables),
        "compose.yml": jinja.from_string((TEMPLATES / "compose.yml.j2").read_text()).render(variables),
    }


def render(env: str, port: int, image_repository: str, image_tag: str, app_dir: Path, proxy_image: str,
           **extra) -> Path:  # fmt: skip
    """Render compose.yml and proxy/nginx.conf as the role does after a first deploy: the proxy and api-blue."""
    slots = {"blue": {"tag": image_tag, "release": f"20260101T000000Z-{image_tag}"}}
    project = f"imgtest-{env}"
    files = stack_files(env, port, project, image_repository, str(app_dir), proxy_image, slots, "blue", **extra)
    (app_dir / "proxy").mkdir(exist_ok=True)
    for name, text in files.items():
        (app_dir / name).write_text(text)
    return app_dir / "compose.yml"


class Stack:
    def __init__(self, env: str, port: int, compose_file: Path, docker_env: dict[str, str]):
        self.env, self.port, self.file, self.docker_env = env, port, compose_file, docker_env

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("docker", "compose", "-f", str(self.file), *args, env=self.docker_env, check=check)

    def container(self, service: str = "api-blue") -> dict:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{self.env}: expected one {service} container, got {ids}"
        return inspect(ids[0])

    def api_port(self) -> int:
        """The loopback port Docker picked for api-blue (the deploy's gate uses it)."""
        return int(self.container()["NetworkSettings"]["Ports"][f"{API_PORT}/tcp"][0]["HostPort"])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def stacks(testbed, built_image, docker_config, tmp_path_factory):
    base = tmp_path_factory.mktemp("stacks")
    result: dict[str, Stack] = {}
    for env, port in STACKS.items():
        app_dir = base / env
        app_dir.mkdir()
        env_file = app_dir / f".env.{env}"
        env_file.write_text(f"MODEL_NAME={testbed['MODEL_NAME']}\nOLLAMA_BASE_URL={testbed['OLLAMA_CONTAINER_URL']}\n")
        env_file.chmod(0o600)
        compose_file = render(env, port, built_image.repository, built_image.tag, app_dir, testbed["PROXY_IMAGE"])
        result[env] = Stack(env, port, compose_file, docker_config)
    try:
        for stack in result.values():
            stack.compose("up", "-d", "--wait", "--wait-timeout", "120")
        yield result
    finally:
        for stack in result.values():
            stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def non_loopback_ipv4() -> list[str]:
    out = run("ip", "-4", "-o", "addr", "show").stdout
    addrs = [line.split()[3].split("/")[0] for line in out.splitlines()]
    return [a for a in addrs if not a.startswith("127.")]


def connect(addr: str, port: int) -> str:
    try:
        with socket.create_connection((addr, port), timeout=3):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error: {exc}"


def test_rendered_file_is_what_the_contract_says(stacks, built_image):
    for env, stack in stacks.items():
        config = json.loads(stack.compose("config", "--format", "json").stdout)
        assert config["name"] == f"imgtest-{env}"
        assert sorted(config["services"]) == ["api-blue", "proxy"]
        proxy = config["services"]["proxy"]
        assert [(p["host_ip"], p["published"], p["target"]) for p in proxy["ports"]] == [
            ("127.0.0.1", str(stack.port), PROXY_PORT)
        ]
        assert proxy["restart"] == "always"
        assert [(v["source"], v["target"], v.get("read_only")) for v in proxy["volumes"]] == [
            (str(stack.file.parent / "proxy"), "/etc/nginx/llm", True)
        ]
        api = config["services"]["api-blue"]
        assert api["image"] == built_image.ref
        assert api["restart"] == "always"
        assert api["stop_grace_period"] == "30s"
        # Loopback only, on a port Docker picks (published "" in compose's normalised form).
        assert [(p["host_ip"], p.get("published", ""), p["target"]) for p in api["ports"]] == [
            ("127.0.0.1", "", API_PORT)
        ]
        assert api["environment"]["APP_ENV"] == env
        assert api["environment"]["APP_VERSION"] == built_image.tag
        assert api["extra_hosts"] == {"host.docker.internal": ["host-gateway"]} or api["extra_hosts"] == [
            "host.docker.internal=host-gateway"
        ], api["extra_hosts"]
        assert api["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
        assert api["labels"] == {
            "io.local-llm-server.env": env,
            "io.local-llm-server.role": "api",
            "io.local-llm-server.color": "blue",
            "io.local-llm-server.tag": built_image.tag,
            "io.local-llm-server.release": f"20260101T000000Z-{built_image.tag}",
        }


def test_both_stacks_serve_side_by_side_through_their_proxies(stacks, built_image, testbed):
    for env, stack in stacks.items():
        status, body = http_get(stack.url("/health"))
        assert (status, body["env"], body["version"]) == (200, env, built_image.tag)
        status, body = http_get(stack.url("/ready"))
        assert (status, body["status"], body["model"]) == (200, "ready", testbed["MODEL_NAME"]), body
        with urllib.request.urlopen(stack.url("/health"), timeout=5) as response:  # noqa: S310 (loopback)
            assert response.headers["X-Api-Color"] == "blue"


@pytest.mark.parametrize(
    ("path", "family"),
    [("/api/chat", "ollama"), ("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
def test_proxy_refuses_a_body_over_the_limit_in_the_route_family_format(stacks, path, family):
    # nginx's client_max_body_size is the service's MAX_REQUEST_BYTES (release_max_request_bytes, one variable):
    # a Content-Length over it is refused before a byte of the body is read, in the JSON the family's clients parse.
    limit = DEFAULTS["release_max_request_bytes"]
    with socket.create_connection(("127.0.0.1", stacks["staging"].port), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {limit + 1}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    status_line, rest = reply.split(b"\r\n", 1)
    assert status_line.startswith(b"HTTP/1.1 413"), reply[:300]
    headers, body = rest.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in headers.lower()
    error = json.loads(body)
    message = f"request body too large: the limit is {limit} bytes"
    expected = {
        "ollama": {"error": message},
        "openai": {
            "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "request_too_large"}
        },
        "anthropic": {"type": "error", "error": {"type": "request_too_large", "message": message}},
    }[family]
    assert error == expected


def test_proxy_streams_chunk_by_chunk(stacks, testbed):
    # Each NDJSON line of a streamed generation must leave the proxy as the app writes it (nginx.conf.j2 turns
    # proxy_buffering off, and the app also sends X-Accel-Buffering: no). The double streams its chunks with a
    # delay between them; arrival times through the proxy must be spread out, not all at the end.
    stack = stacks["staging"]
    harness.double(testbed, "config", {"token_delay": 0.05, "token_count": 6})
    request = urllib.request.Request(  # noqa: S310 (loopback)
        stack.url("/api/generate"),
        data=json.dumps({"model": testbed["MODEL_NAME"], "prompt": "count to five", "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    arrivals = []
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            for line in response:
                arrivals.append((time.monotonic(), json.loads(line)))
    finally:
        harness.double(testbed, "reset")
    assert arrivals[-1][1]["done"] is True and len(arrivals) >= 3, arrivals
    # 6 tokens 50 ms apart: unbuffered, the last line arrives >= 0.25 s after the first; buffered, all at once.
    assert arrivals[-1][0] - arrivals[0][0] > 0.2, "the chunks arrived together: the proxy buffered the stream"


def test_running_containers_carry_the_settings(stacks, built_image):
    for env, stack in stacks.items():
        c = stack.container()
        host = c["HostConfig"]
        assert host["RestartPolicy"]["Name"] == "always"
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"}}
        assert host["PortBindings"] == {f"{API_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        assert "host.docker.internal:host-gateway" in host["ExtraHosts"]
        assert c["Config"]["Labels"]["io.local-llm-server.env"] == env
        assert c["Config"]["Labels"]["com.docker.compose.project"] == f"imgtest-{env}"
        assert c["Config"]["User"] == "10001:10001"
        assert c["State"]["Health"]["Status"] == "healthy"


def test_restarting_or_recreating_one_leaves_the_other_untouched(stacks):
    staging, production = stacks["staging"], stacks["production"]
    before = production.container()
    staging_before = staging.container()

    # Production keeps answering while staging is restarted, recreated (what a deploy does) and taken down.
    failures: list[str] = []
    stop = threading.Event()

    def watch_production():
        while not stop.is_set():
            try:
                status, _ = http_get(production.url("/health"), timeout=3)
                if status != 200:
                    failures.append(f"status {status}")
            except OSError as exc:
                failures.append(str(exc))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_production, daemon=True)
    watcher.start()
    try:
        staging.compose("restart", "--timeout", "5")
        restarted = staging.container()
        assert restarted["Id"] == staging_before["Id"]
        assert restarted["State"]["StartedAt"] != staging_before["State"]["StartedAt"]

        staging.compose("up", "-d", "--wait", "--wait-timeout", "120", "--force-recreate")
        assert staging.container()["Id"] != staging_before["Id"]

        staging.compose("down", "--timeout", "5")
        assert staging.compose("ps", "-q").stdout.strip() == ""
        staging.compose("up", "-d", "--wait", "--wait-timeout", "120")
    finally:
        stop.set()
        watcher.join(timeout=10)

    after = production.container()
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
    assert after["RestartCount"] == before["RestartCount"]
    assert failures == [], f"production failed while staging was restarted: {failures[:5]}"
    assert http_get(staging.url("/health"))[0] == 200


def test_published_ports_refuse_non_loopback_addresses(stacks):
    addrs = non_loopback_ipv4()
    # This machine has at least its ethernet address and the docker0 bridge; the LAN must not reach the API.
    assert addrs, "no non-loopback IPv4 address to test against"
    for stack in stacks.values():
        for port in (stack.port, stack.api_port()):  # the proxy's, and the api colour's own (for the gate)
            assert connect("127.0.0.1", port) == "connected"
            for addr in addrs:
                assert connect(addr, port) == "refused", f"{addr}:{port} must refuse connections"


def test_published_ports_unreachable_from_another_container(stacks, built_image, testbed):
    # A container on the default bridge (the LAN's view of the host, in effect) cannot reach the published port
    # through the host's bridge address either.
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print('connected')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError as e: print('error', e)\n"
    )
    gateway = testbed.get("DOCKER_BRIDGE_GATEWAY") or "172.17.0.1"
    for stack in stacks.values():
        out = run(
            "docker", "run", "--rm", "--entrypoint", "python3", built_image.ref, "-c", probe, gateway, str(stack.port)
        ).stdout.strip()
        assert out == "refused", f"{gateway}:{stack.port} from a container: {out}"


def test_wait_blocks_until_healthy_with_the_template_healthcheck(stacks):
    # `up --wait` returned only once the compose healthcheck passed; the container says so and the interval is the
    # short one from the template (not the image's 5 s default).
    for stack in stacks.values():
        c = stack.container()
        assert c["Config"]["Healthcheck"]["Interval"] == 1_000_000_000
        # The probe itself is the image's (the template sets only the timings).
        assert c["Config"]["Healthcheck"]["Test"] == inspect(c["Image"], "image")["Config"]["Healthcheck"]["Test"]
        wait_for(lambda c=c: inspect(c["Id"])["State"]["Health"]["Status"] == "healthy", 30, "healthy")


def test_start_interval_is_optional_and_rendered_for_new_engines(built_image, tmp_path, docker_config):
    # Unset (the testbed's Docker 20.10 refuses it): absent. Set (Docker Desktop >= 25 on the Mac): present.
    plain = render("staging", 18001, built_image.repository, built_image.tag, tmp_path, "nginx")
    assert "start_interval" not in yaml.safe_load(plain.read_text())["services"]["api-blue"]["healthcheck"]
    (tmp_path / ".env.staging").write_text("MODEL_NAME=x\n")
    fast = render("staging", 18001, built_image.repository, built_image.tag, tmp_path, "nginx",
                  app_healthcheck_start_interval="250ms")  # fmt: skip
    config = json.loads(
        run("docker", "compose", "-f", str(fast), "config", "--format", "json", env=docker_config).stdout
    )
    assert config["services"]["api-blue"]["healthcheck"]["start_interval"] == "250ms"
