"""The processes bench/service.py measures side by side, each started on loopback from this one process tree.

  * the Ollama double (`python -m tests.fakes.ollama`), the upstream of every gateway;
  * nginx (Debian's nginx-light, apt-get installed when missing): proxy_pass to the double with upstream keepalive
    and proxy_buffering off, one worker, no access log, like the deployed proxy
    (ansible/roles/release/templates/nginx.conf.j2): the floor a gateway could reach;
  * the service (`uvicorn app.main:app` from service/), and bench-only variants of it (another directory, module,
    environment or uvicorn options: bench/service_variant.py, scratch copies of service/);
  * the LiteLLM proxy (pinned `litellm[proxy]` in its own git-ignored venv, bench/.venv-litellm), one worker, an
    `openai/<model>` entry whose api_base is the double's /v1 (docs.litellm.ai/docs/proxy/configs).

A peer that cannot be installed or started comes back as a Gateway with `why_not` set, so the table says why
instead of leaving a gap. CPU time is read from /proc for a gateway's whole process tree (nginx's master and
worker, LiteLLM's workers).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
PYTHON = sys.executable
# The LiteLLM release measured (litellm[proxy] 1.110.x needs a `litellm-proxy` wheel that PyPI does not have).
LITELLM_PIN = "litellm[proxy]==1.108.7"
LITELLM_VENV = BENCH / ".venv-litellm"
# Bench-only packages installed with `pip install --target` (not in the service's requirements; git-ignored).
TOOLS = BENCH / ".tools"
TOOL_PINS = {"httpx_aiohttp": "httpx-aiohttp==0.2.0", "py-spy": "py-spy==0.4.3"}


@dataclass
class Gateway:
    """One thing the load is sent to. `why_not` is set when it could not be installed or started."""

    name: str
    url: str = ""
    pid: int = 0  # root of its process tree
    headers: dict[str, str] = field(default_factory=dict)  # e.g. LiteLLM's Authorization
    ollama_routes: bool = True  # serves Ollama's own /api/* routes (LiteLLM serves the OpenAI ones only)
    version: str = ""
    command: str = ""
    why_not: str | None = None

    @property
    def up(self) -> bool:
        return self.why_not is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and every live descendant, plus what their reaped children used
    (cutime/cstime), from /proc/PID/stat (proc(5)). NaN when /proc is missing."""
    if not root or not Path("/proc/self/stat").exists():
        return float("nan")
    ticks: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        pid = int(entry.name)
        ticks[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started (start_new_session), then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _spawn(stack: ExitStack, cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed by the ExitStack
    stack.callback(out.close)
    kwargs.setdefault("stdout", out)
    proc = subprocess.Popen(cmd, stderr=out, start_new_session=True, **kwargs)
    stack.callback(stop_process, proc)
    return proc


def _wait_http(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> str | None:
    """None once `url` answers 200, else why not (exited, or silent for `timeout` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            return f"exited with {proc.returncode}: {' / '.join(tail) or 'no output'}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return f"did not answer {url} within {timeout:.0f} s (log: {log})"


def _pip_tail(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
    return " / ".join(lines[-2:]) or "no output"


# -- installs ------------------------------------------------------------------------------------------------------


def ensure_apt(binary: str, package: str) -> str | None:
    """None when `binary` is on PATH (or /usr/sbin), else apt-get installs `package`; the error text on failure."""
    if shutil.which(binary) or Path("/usr/sbin", binary).exists():
        return None
    if shutil.which("apt-get") is None:
        return f"{binary} is not installed and there is no apt-get to install {package}"
    print(f"installing {package} with apt-get ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run = subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], capture_output=True, text=True, env=env, check=False
    )
    if run.returncode != 0:  # a stale package list: update once, then try again
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, check=False)
        run = subprocess.run(
            ["apt-get", "install", "-y", "-qq", package], capture_output=True, text=True, env=env, check=False
        )
    if run.returncode != 0:
        return f"apt-get install {package} failed: {_pip_tail(run.stderr)}"
    return None


def ensure_tool(name: str) -> str | None:
    """pip-install a bench-only package (TOOL_PINS) into bench/.tools; None when it is there."""
    pin = TOOL_PINS[name]
    stamp = TOOLS / f".{name}.installed"
    if stamp.exists() and stamp.read_text() == pin:
        return None
    print(f"installing {pin} into {TOOLS} ...", file=sys.stderr)
    cmd = [PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target", str(TOOLS), pin]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        return f"pip install {pin} failed: {_pip_tail(run.stderr)}"
    stamp.write_text(pin)
    return None


def ensure_litellm() -> str | None:
    stamp = LITELLM_VENV / ".bench-installed"
    if stamp.exists() and stamp.read_text() == LITELLM_PIN:
        return None
    print(f"installing {LITELLM_PIN} into {LITELLM_VENV} (a few minutes the first time) ...", file=sys.stderr)
    if not (LITELLM_VENV / "bin" / "python").exists():
        run = subprocess.run([PYTHON, "-m", "venv", str(LITELLM_VENV)], capture_output=True, text=True, check=False)
        if run.returncode != 0:
            return f"python -m venv failed: {_pip_tail(run.stderr)}"
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", LITELLM_PIN]
    run = subprocess.run(pip, capture_output=True, text=True, check=False, timeout=1800)
    if run.returncode != 0:
        return f"pip install {LITELLM_PIN} failed: {_pip_tail(run.stderr)}"
    stamp.write_text(LITELLM_PIN)
    return None


# -- the processes -------------------------------------------------------------------------------------------------


def start_double(stack: ExitStack, model: str, logdir: Path, *settings: str) -> Gateway:
    """The double; `settings` are more of its command-line options (e.g. "--num-parallel", "4")."""
    cmd = [PYTHON, "-m", "tests.fakes.ollama", "--port", "0", "--model", model, *settings]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = _spawn(stack, cmd, logdir / "double.log", cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        raise SystemExit(f"the Ollama double did not start: {line!r}; see {logdir / 'double.log'}")
    return Gateway("direct", match.group(1), proc.pid, command=shlex.join(["python", *cmd[1:]]))


NGINX_CONF = """\
# bench/service.py: the floor. Like the deployed proxy (ansible/roles/release/templates/nginx.conf.j2), plus
# upstream keepalive (nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive).
daemon off;
worker_processes 1;
pid @DIR@/nginx.pid;
error_log @DIR@/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    upstream double {
        server @UPSTREAM@;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            proxy_pass http://double;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            client_max_body_size 0;
            proxy_read_timeout 300s;
        }
    }
}
"""


def start_nginx(stack: ExitStack, double: Gateway, logdir: Path) -> Gateway:
    gateway = Gateway("nginx")
    error = ensure_apt("nginx", "nginx-light")
    if error:
        gateway.why_not = error
        return gateway
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stderr.strip()
    gateway.version = version.removeprefix("nginx version: ")
    port = free_port()
    workdir = logdir / "nginx"
    workdir.mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    upstream = double.url.removeprefix("http://")
    conf.write_text(
        NGINX_CONF.replace("@DIR@", str(workdir)).replace("@UPSTREAM@", upstream).replace("@PORT@", str(port))
    )
    # -e: errors before the config is read go to our log too, not /var/log/nginx.
    cmd = [binary, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "nginx-error.log")]
    proc = _spawn(stack, cmd, logdir / "nginx.log")
    gateway.url, gateway.pid = f"http://127.0.0.1:{port}", proc.pid
    gateway.command = f"nginx -c {conf.name} (worker_processes 1, keepalive 64, proxy_buffering off)"
    gateway.why_not = _wait_http(proc, f"{gateway.url}/api/version", logdir / "nginx.log", 15)
    return gateway


@dataclass
class ServiceSpec:
    """How to run one service row: `uvicorn APP` from DIR with extra environment and uvicorn options.

    Parsed from `--variant 'LABEL: [dir=PATH] [app=MODULE:ATTR] [NAME=VALUE ...] [body.FIELD=JSON ...]
    [--uvicorn-option ...]'`. body.FIELD adds FIELD to the request body the paired row sends to both this variant and
    the shipped service (e.g. body.keep_alive=0, to measure a policy rewriting it).
    """

    label: str
    directory: Path = REPO / "service"
    app: str = "app.main:app"
    env: dict[str, str] = field(default_factory=dict)
    uvicorn_args: list[str] = field(default_factory=list)
    body: dict[str, object] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ServiceSpec:
        label, _, rest = text.partition(":")
        spec = cls(label.strip())
        tokens = shlex.split(rest)
        for i, token in enumerate(tokens):
            if token.startswith("--"):
                spec.uvicorn_args = tokens[i:]
                break
            key, sep, value = token.partition("=")
            if not sep:
                raise SystemExit(f"--variant {text!r}: {token!r} is not dir=, app=, NAME=VALUE or a --option")
            if key == "dir":
                spec.directory = Path(value).resolve()
            elif key == "app":
                spec.app = value
            elif key.startswith("body."):
                try:
                    spec.body[key.removeprefix("body.")] = json.loads(value)
                except ValueError:
                    raise SystemExit(f"--variant {text!r}: {token!r}: the value is not JSON") from None
            else:
                spec.env[key] = value
        if not spec.label:
            raise SystemExit(f"--variant {text!r}: a label is required before the ':'")
        return spec

    def describe(self) -> str:
        parts = []
        if self.directory != REPO / "service":
            parts.append(f"dir={self.directory}")
        if self.app != "app.main:app":
            parts.append(f"app={self.app}")
        parts += [f"{k}={v}" for k, v in self.env.items()]
        parts += [f"body.{k}={json.dumps(v)}" for k, v in self.body.items()]
        return shlex.join(parts + self.uvicorn_args) or "as shipped"


def start_service(
    stack: ExitStack, spec: ServiceSpec, model: str, double: Gateway, logdir: Path, log_level: str
) -> Gateway:
    gateway = Gateway(spec.label)
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "local",
        "MODEL_NAME": model,
        "OLLAMA_BASE_URL": double.url,
        "RATE_LIMIT_PER_MINUTE": "0",  # 0 disables the limiter (service/app/config.py)
        "MAX_CONCURRENT": "64",  # above the load's 32, so no request waits in the service's queue
        "MAX_QUEUE": "1000",
        "LOG_LEVEL": log_level,
        **spec.env,
    }
    if spec.app != "app.main:app":  # a bench-only wrapper (bench/service_variant.py) and the tools it imports
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(TOOLS)])
    log = logdir / f"service-{re.sub(r'[^A-Za-z0-9]+', '-', spec.label)}.log"
    cmd = [PYTHON, "-m", "uvicorn", spec.app, "--host", "127.0.0.1", "--port", str(port)]
    # As the image runs it (Dockerfile CMD: --proxy-headers is uvicorn's default, --no-server-header is not).
    cmd += ["--no-server-header", "--log-level", "warning", "--no-access-log", *spec.uvicorn_args]
    proc = _spawn(stack, cmd, log, cwd=spec.directory, env=env)
    gateway.url, gateway.pid = f"http://127.0.0.1:{port}", proc.pid
    gateway.command = f"cd {os.path.relpath(spec.directory, REPO)} && {shlex.join(['python', *cmd[1:]])}"
    gateway.why_not = _wait_http(proc, f"{gateway.url}/health", log, 30)
    return gateway


def start_litellm(stack: ExitStack, model: str, double: Gateway, logdir: Path) -> Gateway:
    gateway = Gateway("LiteLLM", ollama_routes=False)
    error = ensure_litellm()
    if error:
        gateway.why_not = error
        return gateway
    python = str(LITELLM_VENV / "bin" / "python")
    gateway.version = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    key = "sk-bench-" + secrets.token_hex(16)  # this run's master key: in the environment, never on a command line
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {"model": f"openai/{model}", "api_base": f"{double.url}/v1", "api_key": "none"},
            }
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    conf = logdir / "litellm.yaml"
    conf.write_text(json.dumps(config, indent=2))  # JSON is YAML
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the model price list at start (no network here)
        "LITELLM_TELEMETRY": "False",
    }
    cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", "1"]
    proc = _spawn(stack, cmd, logdir / "litellm.log", env=env, cwd=logdir)
    gateway.url, gateway.pid = f"http://127.0.0.1:{port}", proc.pid
    gateway.headers = {"Authorization": f"Bearer {key}"}
    gateway.command = f"litellm --config litellm.yaml --num_workers 1 ({LITELLM_PIN}, LITELLM_MASTER_KEY set)"
    gateway.why_not = _wait_http(proc, f"{gateway.url}/health/liveliness", logdir / "litellm.log", 180)
    if gateway.why_not is None:  # it runs: does it answer a chat through the double?
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
        try:
            r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.headers, timeout=60)
            if r.status_code != 200:
                gateway.why_not = f"a chat through it answered {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            gateway.why_not = f"a chat through it failed: {exc!r}"
    return gateway
