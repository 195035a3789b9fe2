"""Drive the real playbooks against the testbed: shared by tests/e2e and bench/deploy.py.

Everything here is real: `testbed/up.sh` (sshd "Mac Mini", registry with htpasswd, Docker, Ollama double,
cloudflared stand-in), images built and pushed by `scripts/build-push.sh`, ansible-playbook over SSH, run through
ansible-runner by scripts/playbook.py (as `make deploy` does) and judged by its events. Nothing is mocked; only
Ollama is our double (tests/fakes/ollama.py), steered through its /_double/* control API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pwd
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import astuple, dataclass, field
from pathlib import Path

import yaml

from scripts import playbook
from tests.role_plugins import role_plugin

ROOT = Path(__file__).resolve().parents[2]
TESTBED = ROOT / ".testbed"
PLAYBOOKS = ROOT / "ansible"
INVENTORY = ROOT / "inventories" / "local"
TESTBED_HOST = "testbed"  # the inventory's one host
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
DEPLOY_HOME = Path("/home/deploy/local-llm-server")  # app_root of the testbed's deploy user
HISTORY = DEPLOY_HOME / "state" / "releases.jsonl"
# The one table of environments (environments.yml): port, compose project and public hostname of each.
ENVIRONMENTS = yaml.safe_load((ROOT / "environments.yml").read_text())["environments"]
PORTS = {name: env["port"] for name, env in ENVIRONMENTS.items()}
PROJECTS = {name: env["compose_project"] for name, env in ENVIRONMENTS.items()}


class TestbedError(RuntimeError):
    """The testbed or an image could not be prepared: fail loudly, never skip."""


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True, **kwargs)


def testbed_up() -> dict[str, str]:
    """Run testbed/up.sh (idempotent, ~3 s when up) and return .testbed/env as a dict."""
    result = run(["bash", str(ROOT / "testbed" / "up.sh")])
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-3000:]
        raise TestbedError(f"testbed/up.sh failed ({result.returncode}):\n{output}")
    env = {}
    for line in (TESTBED / "env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            env[key] = value
    install_cloudflared_config(Path(env["CLOUDFLARED_CONFIG"]).read_text())
    return env


CLOUDFLARED_USER_CONFIG = Path("/home/deploy/.cloudflared/config.yml")


def install_cloudflared_config(text: str) -> None:
    """Put the testbed's cloudflared config where a Mac user's cloudflared keeps it (~/.cloudflared/config.yml,
    where the testbed inventory points the cloudflared role). The testbed's own copy sits in the root-only .testbed."""
    CLOUDFLARED_USER_CONFIG.parent.mkdir(mode=0o755, exist_ok=True)
    CLOUDFLARED_USER_CONFIG.write_text(text)
    CLOUDFLARED_USER_CONFIG.chmod(0o644)
    for path in (CLOUDFLARED_USER_CONFIG.parent, CLOUDFLARED_USER_CONFIG):
        os.chown(path, *deploy_ids())


def deploy_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("deploy")
    return entry.pw_uid, entry.pw_gid


def registry_password(env: dict[str, str]) -> str:
    return Path(env["REGISTRY_PASSWORD_FILE"]).read_text().strip()


def build_push(variant: str) -> str:
    """Build and push a distinct good image with C's scripts/build-push.sh; return its sha- tag."""
    result = run(["bash", str(ROOT / "scripts" / "build-push.sh")], env={**os.environ, "BUILD_VARIANT": variant})
    if result.returncode != 0:
        raise TestbedError(f"build-push.sh ({variant}) failed:\n{result.stderr[-3000:]}")
    match = re.search(r"^IMAGE_TAG=(sha-[0-9a-f]+)$", result.stdout, flags=re.M)
    if not match:
        raise TestbedError(f"build-push.sh printed no IMAGE_TAG line:\n{result.stdout[-2000:]}")
    return match.group(1)


@dataclass(frozen=True)
class Images:
    """The e2e tier's releases, all in the testbed's registry and none on the engine (deploys log in and pull)."""

    first: str  # two good releases built from this tree with distinct BUILD_VARIANTs
    second: str
    broken: str  # starts, /health 200, /ready always 503
    unhealthy: str  # /ready 200, Docker healthcheck always failing (refused by the gate)


def publish_images(env: dict[str, str]) -> Images:
    """Build and push the tier's images (the same tags every time for the same tree), then untag them locally."""
    first = build_push("e2e-first")
    second = build_push("e2e-second")
    images = Images(first, second, push_broken(env, first), push_unhealthy(env, first))
    # Only in the registry from here on: each first deploy of a tag logs in and pulls, as on the Mac. A tag a stack
    # already runs (the same tree was deployed before) stays: on the Mac too it is on the host, never pulled again.
    forget_locally(env, *(tag for tag in astuple(images) if not tag_in_use(tag)))
    return images


def tag_in_use(tag: str) -> bool:
    """A container of either stack was made from this release (its label says so)."""
    result = run(["docker", "ps", "-aq", "--filter", f"label=io.local-llm-server.tag={tag}"])
    return bool(result.stdout.strip())


def registry_digest(env: dict[str, str], tag: str) -> str | None:
    """The manifest digest the testbed's registry serves for a tag (v2 API, with its credentials); None: no such tag."""
    repo = env["IMAGE_REPOSITORY"].split("/", 1)[1]
    token = base64.b64encode(f"{env['REGISTRY_USER']}:{registry_password(env)}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 (loopback URL of the testbed)
        f"http://{env['REGISTRY']}/v2/{repo}/manifests/{tag}",
        method="HEAD",
        headers={"Authorization": f"Basic {token}", "Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.headers["Docker-Content-Digest"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def published(env: dict[str, str], images: Images) -> bool:
    return all(registry_digest(env, tag) for tag in astuple(images))


def push_broken(env: dict[str, str], good_tag: str) -> str:
    """An image that starts and passes /health but never /ready: the good image with an entrypoint that forces an
    unreachable OLLAMA_BASE_URL (env_file values would otherwise win). Pushed under its own sha- tag."""
    config = _image_config(env, good_tag)
    entrypoint = ["env", "OLLAMA_BASE_URL=http://127.0.0.1:9"] + (config.get("Entrypoint") or [])
    return _push_derived(
        env,
        good_tag,
        'LABEL io.local-llm-server.variant="broken: /ready always 503"\n'
        f"ENTRYPOINT {json.dumps(entrypoint)}\n"
        f"CMD {json.dumps(config.get('Cmd') or [])}\n",
    )


def push_unhealthy(env: dict[str, str], good_tag: str) -> str:
    """An image that answers /ready but whose Docker healthcheck always fails: the gate's `compose up --wait` must
    refuse it before it takes any traffic."""
    return _push_derived(
        env,
        good_tag,
        'LABEL io.local-llm-server.variant="unhealthy: /ready 200, healthcheck always failing"\n'
        'HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD ["python3", "-I", "-S", "-c", "raise SystemExit(1)"]\n',
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll predicate() until it returns something true (returned), or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def flat(output: str) -> str:
    """Playbook output with the YAML callback's line wrapping undone, for phrases that may straddle a wrap."""
    return " ".join(output.split())


def forget_locally(env: dict[str, str], *tags: str, missing_ok: bool = False) -> None:
    """Untag images that build_push/_push_derived (or a deploy's pull) left on this engine, so that a deploy must
    pull them from the registry through the deploy user's login (on the Mac, images only come from the registry)."""
    repo = env["IMAGE_REPOSITORY"]
    for tag in tags:
        if missing_ok and inspect_image(f"{repo}:{tag}") is None:
            continue
        result = run(["docker", "image", "rm", f"{repo}:{tag}"])
        if result.returncode != 0:
            raise TestbedError(f"cannot untag {repo}:{tag}: {result.stderr}")


def inspect_image(ref: str) -> dict | None:
    result = run(["docker", "image", "inspect", ref])
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def _image_config(env: dict[str, str], tag: str) -> dict:
    image = inspect_image(f"{env['IMAGE_REPOSITORY']}:{tag}")
    if image is None:
        raise TestbedError(f"no image {env['IMAGE_REPOSITORY']}:{tag} on this engine")
    return image["Config"]


def _push_derived(env: dict[str, str], good_tag: str, instructions: str) -> str:
    """Build FROM the good image plus `instructions`, push it under a sha- tag derived from the Dockerfile."""
    repo = env["IMAGE_REPOSITORY"]
    dockerfile = f"FROM {repo}:{good_tag}\n{instructions}"
    tag = "sha-" + hashlib.sha256(dockerfile.encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory() as context, tempfile.TemporaryDirectory() as docker_config:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        steps = [
            ["docker", "build", "-q", "-t", f"{repo}:{tag}", context],
            ["docker", "--config", docker_config, "login", "--password-stdin"]
            + ["-u", env["REGISTRY_USER"], env["REGISTRY"]],
            ["docker", "--config", docker_config, "push", "-q", f"{repo}:{tag}"],
        ]
        for argv in steps:
            stdin = registry_password(env) if "login" in argv else None
            result = run(argv, input=stdin)
            if result.returncode != 0:
                raise TestbedError(f"{' '.join(argv[:4])} failed: {result.stderr[-2000:]}")
    return tag


@dataclass
class PlaybookRun:
    """One playbook run as the e2e tests read it. Exit code, recap and failures come from ansible-runner's events
    (scripts/playbook.py); `output` is ansible-playbook's text, for the messages a test looks for."""

    argv: list[str]  # the equivalent command line (python -m scripts.playbook ...)
    result: playbook.PlaybookResult = field(repr=False)

    @property
    def returncode(self) -> int:
        return self.result.rc

    @property
    def output(self) -> str:
        return self.result.output

    @property
    def seconds(self) -> float:
        return self.result.seconds

    @property
    def recap(self) -> dict[str, int]:
        """The testbed host's PLAY RECAP counts; {} when no play ran."""
        return self.result.recap.get(TESTBED_HOST, {})

    @property
    def changed(self) -> int:
        return self.recap.get("changed", -1)

    @property
    def failures(self) -> list[playbook.TaskResult]:
        return self.result.failures


@dataclass
class Ansible:
    """The playbooks with the testbed's inventory; the registry password only ever in the process environment."""

    # repr=False: pytest prints fixtures in failure reports, and base_env holds the registry password.
    env: dict[str, str] = field(repr=False)
    base_env: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.base_env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "TESTBED_DIR": str(TESTBED),
            "REGISTRY_USERNAME": self.env["REGISTRY_USER"],
            "REGISTRY_PASSWORD": registry_password(self.env),
            "GITHUB_ACTOR": "e2e-tests",
        }
        for name in ("MODEL_NAME", "ALLOWED_ORIGINS", "RATE_LIMIT_PER_MINUTE", "GITHUB_RUN_ID"):
            self.base_env.pop(name, None)

    def args(self, playbook_name: str, *extra: str) -> list[str]:
        """ansible-playbook's arguments: the playbook, the testbed's inventory, then extra."""
        return [str(PLAYBOOKS / playbook_name), "-i", str(INVENTORY), *extra]

    def argv(self, playbook_name: str, *extra: str) -> list[str]:
        """The module's CLI, as `make deploy` runs it."""
        return [str(VENV_PYTHON), "-m", "scripts.playbook", *self.args(playbook_name, *extra)]

    def start(self, playbook_name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A run in a child process of its own (the module's CLI), for tests that kill it: SIGKILL of the child
        takes ansible-playbook with it (scripts/playbook.py, _exec_with_environment). stdout: ansible's output."""
        return subprocess.Popen(
            self.argv(playbook_name, *extra),
            cwd=ROOT,
            env=env or self.base_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(
        self, playbook_name: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 300, **kwargs
    ) -> PlaybookRun:
        """Run to the end in this process (kwargs: scripts.playbook.run's, e.g. on_event, private_data_dir)."""
        result = playbook.run(*self.args(playbook_name, *extra), env=env or self.base_env, timeout=timeout, **kwargs)
        return PlaybookRun(self.argv(playbook_name, *extra), result)

    def deploy(self, app_env: str, tag: str, *extra: str, **kwargs) -> PlaybookRun:
        return self.run("deploy.yml", "-e", f"app_env={app_env}", "-e", f"image_tag={tag}", *extra, **kwargs)

    def rollback(self, app_env: str, *extra: str, **kwargs) -> PlaybookRun:
        return self.run("rollback.yml", "-e", f"app_env={app_env}", *extra, **kwargs)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback URL of the testbed)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return -1, str(exc)


def serving_versions() -> dict[str, str]:
    """{env: version} of every environment whose port answers /health (through its proxy)."""
    answers = {app_env: health(app_env) for app_env in PORTS}
    return {app_env: body["version"] for app_env, body in answers.items() if "version" in body}


def ensure_serving(ansible: Ansible, tag: str) -> dict[str, str]:
    """Both environments serving: deploy `tag` wherever nothing answers. Returns serving_versions()."""
    serving = serving_versions()
    for app_env in [name for name in PORTS if name not in serving]:
        must_deploy(ansible, app_env, tag)
    return serving_versions()


def must_deploy(ansible: Ansible, app_env: str, tag: str) -> None:
    """Deploy a test's baseline: a failure here is the testbed's (TestbedError), not the test's."""
    result = ansible.deploy(app_env, tag)
    if result.returncode != 0:
        raise TestbedError(f"deploying {tag} to {app_env} failed:\n{result.output[-3000:]}")


def manifest() -> list[str]:
    """What testbed/up.sh recorded as its own (.testbed/manifest), one "kind value" per line."""
    path = TESTBED / "manifest"
    return path.read_text().splitlines() if path.exists() else []


def restart_engine() -> None:
    """Stop the Docker engine under both stacks and start it again, as a reboot of the Mac does (Docker Desktop
    starts again at login). An engine the testbed started is stopped and started again by up.sh; a systemd-managed
    one (GitHub's runners) is restarted by systemd."""
    if "proc dockerd" in manifest():
        pid = int((TESTBED / "run" / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                raise TestbedError(f"dockerd (pid {pid}) did not stop within 60 s")
            time.sleep(0.1)
        testbed_up()
    elif run(["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        result = run(["systemctl", "restart", "docker"])
        if result.returncode != 0:
            raise TestbedError(f"systemctl restart docker failed: {result.stderr}")
    else:
        raise TestbedError("cannot restart the Docker engine: the testbed did not start it and systemd does not run it")


def health_url(app_env: str) -> str:
    """/health on the environment's port (through its proxy)."""
    return f"http://127.0.0.1:{PORTS[app_env]}/health"


def health(app_env: str) -> dict:
    status, body = http_get(health_url(app_env))
    return json.loads(body) if status == 200 else {"status": status, "body": body}


# The release role's reading of a proxy config (release_proxy_color): the tests read the file as the role does.
_release_filters = role_plugin("release/filter_plugins/release.py")


def live_color(app_env: str) -> str | None:
    """The colour the environment's proxy config names (the release role wrote it), or None before the first deploy."""
    conf = DEPLOY_HOME / app_env / "proxy" / "nginx.conf"
    return (_release_filters.release_proxy_color(conf.read_text()) if conf.exists() else "") or None


def proxy_name(app_env: str) -> str:
    """Compose's name of the environment's proxy container."""
    return f"{PROJECTS[app_env]}-proxy-1"


def api_name(app_env: str, color: str) -> str:
    """Compose's name of one api colour's container."""
    return f"{PROJECTS[app_env]}-api-{color}-1"


def container(app_env: str) -> dict | None:
    """docker inspect of the live (serving) api container, or None."""
    color = live_color(app_env)
    return inspect(api_name(app_env, color)) if color else None


def project_containers(app_env: str) -> list[str]:
    """Names of all containers of the environment's compose project, running or not, sorted."""
    result = run(
        [
            "docker",
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label=com.docker.compose.project={PROJECTS[app_env]}",
        ]
    )
    return sorted(result.stdout.split())


def served_color(app_env: str) -> str | None:
    """X-Api-Color of /health on the environment's port: the colour nginx actually sends traffic to."""
    try:
        with urllib.request.urlopen(health_url(app_env), timeout=5) as response:  # noqa: S310
            return response.headers.get("X-Api-Color")
    except OSError:
        return None


def inspect(name: str) -> dict | None:
    """docker inspect of a container by name, or None."""
    result = run(["docker", "inspect", name])
    return json.loads(result.stdout)[0] if result.returncode == 0 else None


def container_exists(name: str) -> bool:
    return inspect(name) is not None


def history() -> list[dict]:
    if not HISTORY.exists():
        return []
    return [json.loads(line) for line in HISTORY.read_text().splitlines() if line.strip()]


def double_requests(env: dict[str, str], path: str) -> list[dict]:
    """The requests the Ollama double recorded for a path (its /_double/requests control route)."""
    with urllib.request.urlopen(f"{env['OLLAMA_HOST_URL']}/_double/requests", timeout=5) as response:  # noqa: S310
        return [r for r in json.loads(response.read()) if r["path"] == path]


def double(env: dict[str, str], action: str, payload: dict | None = None) -> None:
    """POST to the Ollama double's control API (/_double/config or /_double/reset)."""
    request = urllib.request.Request(  # noqa: S310 (loopback URL of the testbed)
        f"{env['OLLAMA_HOST_URL']}/_double/{action}",
        data=json.dumps(payload or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback URL of the testbed)
        assert response.status == 200


def reset_stacks() -> None:
    """Start from nothing deployed: remove both stacks' containers, files and the release history."""
    for app_env, project in PROJECTS.items():
        for name in project_containers(app_env):
            run(["docker", "rm", "-f", name])
        run(["docker", "network", "rm", f"{project}_default"])
    run(["rm", "-rf", str(DEPLOY_HOME / "staging"), str(DEPLOY_HOME / "production"), str(DEPLOY_HOME / "state")])


class Probe:
    """GET a URL at a fixed rate in a background thread; count failures (anything but 200)."""

    def __init__(self, url: str, rate: float = 20.0) -> None:
        self.url, self.interval = url, 1.0 / rate
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            status, _ = http_get(self.url, timeout=1.0)
            self.results.append((time.monotonic(), status))
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def failures(self) -> int:
        return sum(1 for _, status in self.results if status != 200)

    @property
    def unavailable_seconds(self) -> float:
        """Time from the first failed probe to the next success (summed over outages), in seconds."""
        total, down_since = 0.0, None
        for at, status in self.results:
            if status != 200 and down_since is None:
                down_since = at
            elif status == 200 and down_since is not None:
                total += at - down_since
                down_since = None
        if down_since is not None:
            total += self.results[-1][0] - down_since
        return total


def snapshot() -> dict:
    """What a refused run must not change: both stacks' containers, their files on the host, the history."""
    state: dict = {"history": len(history())}
    for app_env, project in PROJECTS.items():
        names = project_containers(app_env)
        for name in names:
            info = inspect(name)
            state[name] = (info["Id"], info["State"]["StartedAt"]) if info else None
        state[f"{project} containers"] = names
        files = ("compose.yml", f".env.{app_env}", "proxy/nginx.conf")
        for path in (DEPLOY_HOME / app_env / name for name in files):
            state[str(path)] = path.stat().st_mtime_ns if path.exists() else None
    return state
