"""The direct path of `make bench-deploy`: a deploy's steps by hand, without Ansible, to measure the playbooks against.

What a careful shell script does over one SSH session (Kamal runs the same kind of commands over SSHKit:
https://github.com/basecamp/kamal/blob/main/lib/kamal/commands/app.rb), on a compose project of its own
(`llm-benchdirect`, port 18101, `~/bench-direct` of the deploy user), so the testbed's stacks and release history are
never touched. Each run is one `ssh HOST bash -s` with the script on stdin; the files are rendered on the controller
from the role's own templates (tests/image/test_compose_stacks.stack_files) and sent in heredocs.

A deploy (new tag, or a rollback: the same script with an image already on the host):
  checks   docker version, docker compose version, df, Ollama's /api/tags, cloudflared's /ready
  lock     mkdir of a lock directory, removed on exit
  observe  the live colour from the containers' labels (must be the one this bench left)
  pull     docker pull of the tag, with the deploy user's DOCKER_CONFIG that the role logged in (new tag only)
  gate     compose.yml with both colours, `compose up -d` of the new colour, Docker's health asked every
           release_health_poll s, then /ready on the colour's own port every second
  switch   proxy/nginx.conf naming the new colour, `compose up -d proxy`, nginx -s reload, /ready through the
           environment's port answered by the new colour (X-Api-Color)
  retire   compose.yml with the new colour only, docker stop (graceful) and rm of the old one
  record   a JSON line appended to a history file
A rerun: /health names the tag, no lock, the three files byte-identical, `compose up --dry-run` of the live colour
and the proxy has nothing to do. Left out of what the playbooks do: argument validation, the registry's HEAD before
the pull, the proxy image check, image pruning and every failure path.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field

from tests.e2e import harness
from tests.image.test_compose_stacks import DEFAULTS, stack_files

PROJECT = "llm-benchdirect"
PORT = 18101
ENV_NAME = "staging"  # the settings the stack runs with (APP_ENV)
HOST_DIR = str(harness.DEPLOY_HOME.parent / "bench-direct")  # beside app_root, in the deploy user's home
DOCKER_CONFIG = f"{harness.DEPLOY_HOME}/docker-config"  # app_docker_config_dir: where the role logs in
GATE_TIMEOUT = 60  # seconds, for each wait of the gate

# Shared by every script: stop at the first failure; wait_until SECONDS INTERVAL COMMAND... retries a command.
PRELUDE = """set -euo pipefail
wait_until() {
  local deadline=$((SECONDS + $1)) interval=$2; shift 2
  until "$@"; do
    if ((SECONDS >= deadline)); then echo "gave up waiting for: $*" >&2; return 1; fi
    sleep "$interval"
  done
}
"""


def heredoc(path: str, text: str) -> str:
    """Shell lines writing text to path (0600, as the role writes compose.yml)."""
    return f"install -m 600 /dev/stdin {shlex.quote(path)} <<'BENCH_DIRECT_EOF'\n{text}BENCH_DIRECT_EOF\n"


@dataclass
class DirectStack:
    """The bench's own stack on the testbed host; live (colour) and slots track what this bench left running."""

    env: dict[str, str]
    image_repository: str
    proxy_image: str
    live: str = ""
    slots: dict[str, dict[str, str]] = field(default_factory=dict)

    def ssh(self, script: str) -> float:
        """Run script on the host in one SSH session; its wall-clock seconds (the SSH handshake included)."""
        argv = [
            "ssh", "-p", self.env["SSH_PORT"], "-i", self.env["SSH_KEY"],
            "-o", f"UserKnownHostsFile={self.env['SSH_KNOWN_HOSTS']}", "-o", "BatchMode=yes",
            f"{self.env['SSH_USER']}@{self.env['SSH_HOST']}", "bash", "-s",
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(argv, input=PRELUDE + script, capture_output=True, text=True, timeout=300, check=False)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"direct path failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
        return seconds

    def files(self, slots: dict[str, dict[str, str]], live: str) -> dict[str, str]:
        rendered = stack_files(ENV_NAME, PORT, PROJECT, self.image_repository, HOST_DIR, self.proxy_image, slots, live)
        env_file = f"MODEL_NAME={self.env['MODEL_NAME']}\nOLLAMA_BASE_URL={self.env['OLLAMA_CONTAINER_URL']}\n"
        return {**rendered, f".env.{ENV_NAME}": env_file}

    def write(self, files: dict[str, str]) -> str:
        return "".join(heredoc(f"{HOST_DIR}/{name}", text) for name, text in files.items())

    def compose(self, *args: str) -> str:
        return shlex.join(["docker", "compose", "-p", PROJECT, "-f", f"{HOST_DIR}/compose.yml", *args])

    def up(self, tag: str) -> None:
        """Not measured: the stack serving tag on api-blue, as after a first deploy."""
        self.down()
        self.slots, self.live = {"blue": {"tag": tag, "release": f"direct-{tag}"}}, "blue"
        self.ssh(
            f"mkdir -p {HOST_DIR}/proxy\n{self.write(self.files(self.slots, self.live))}"
            f"{self.compose('up', '-d', '--wait', '--wait-timeout', str(GATE_TIMEOUT), '--pull', 'never')}\n"
        )

    def down(self) -> None:
        self.ssh(
            f"if [ -f {HOST_DIR}/compose.yml ]; then {self.compose('down', '--timeout', '5', '--remove-orphans')}; fi\n"
            f"rm -rf {HOST_DIR}\n"
        )
        self.live, self.slots = "", {}

    def deploy(self, tag: str, *, pull: bool) -> float:
        """Blue/green to tag by hand; the seconds it took."""
        if not self.live:
            raise RuntimeError("deploy: up() first (the direct path switches from a live colour)")
        old, new = self.live, "green" if self.live == "blue" else "blue"
        new_slot = {"tag": tag, "release": f"direct-{tag}-{time.time_ns()}"}
        both = {**self.slots, new: new_slot}
        container, old_container, proxy = (f"{PROJECT}-{name}-1" for name in (f"api-{new}", f"api-{old}", "proxy"))
        api_port = DEFAULTS["release_container_port"]
        label = '{{.Label "io.local-llm-server.color"}}'
        record = json.dumps({"env": ENV_NAME, "tag": tag, "color": new, "result": "success"})
        script = f"""cd {HOST_DIR}
docker version --format '{{{{.Server.Version}}}}' >/dev/null
docker compose version --short >/dev/null
df -Pk . >/dev/null
curl -fsS -o /dev/null {self.env["OLLAMA_HOST_URL"]}/api/tags
curl -fsS -o /dev/null {self.env["CLOUDFLARED_METRICS_URL"]}/ready
mkdir lock
trap 'rmdir {HOST_DIR}/lock' EXIT
live=$(docker ps --filter label=com.docker.compose.project={PROJECT} --filter label=io.local-llm-server.role=api \\
  --format '{label}')
[ "$live" = {old} ] || {{ echo "live colour: '$live', expected {old}" >&2; exit 1; }}
{f"DOCKER_CONFIG={DOCKER_CONFIG} docker pull -q {self.image_repository}:{tag} >/dev/null" if pull else ""}
{self.write({"compose.yml": self.files(both, old)["compose.yml"]})}
{self.compose("up", "-d", "--pull", "never", f"api-{new}")}
healthy() {{ [ "$(docker inspect -f '{{{{.State.Health.Status}}}}' {container})" = healthy ]; }}
wait_until {GATE_TIMEOUT} {DEFAULTS["release_health_poll"]} healthy
port=$(docker port {container} {api_port}/tcp | head -n 1)
wait_until {GATE_TIMEOUT} 1 curl -fsS -o /dev/null "http://127.0.0.1:${{port##*:}}/ready"
{self.write({"proxy/nginx.conf": self.files(both, new)["proxy/nginx.conf"]})}
{self.compose("up", "-d", "--pull", "never", "proxy")}
docker exec {proxy} nginx -c /etc/nginx/llm/nginx.conf -s reload
served() {{ curl -fsS -o /dev/null -D - http://127.0.0.1:{PORT}/ready | grep -qi '^x-api-color: {new}'; }}
wait_until 10 0.1 served
{self.write({"compose.yml": self.files({new: new_slot}, new)["compose.yml"]})}
docker stop {old_container} >/dev/null
docker rm {old_container} >/dev/null
printf '%s\\n' {shlex.quote(record)} >> history.jsonl
"""
        seconds = self.ssh(script)
        self.slots, self.live = {new: new_slot}, new
        return seconds

    def rerun(self, tag: str) -> float:
        """Ask, as a rerun does, whether tag already serves exactly as the files say; the seconds it took."""
        checks = "".join(
            f"cmp -s {HOST_DIR}/{name} - <<'BENCH_DIRECT_EOF'\n{text}BENCH_DIRECT_EOF\n"
            for name, text in self.files(self.slots, self.live).items()
        )
        script = f"""cd {HOST_DIR}
curl -fsS http://127.0.0.1:{PORT}/health | grep -q {shlex.quote(f'"{tag}"')}
[ ! -e lock ]
{checks}
plan=$({self.compose("up", "-d", "--dry-run", "--pull", "never", "proxy", f"api-{self.live}")} 2>&1)
if grep -qE 'Creat|Recreat|Start' <<<"$plan"; then echo "compose would change something: $plan" >&2; exit 1; fi
"""
        return self.ssh(script)
