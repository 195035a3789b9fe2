"""`make demo`: the whole pipeline rehearsed on the local testbed, with the same make targets CI calls.

testbed up -> build + push :sha-<hash> and :staging -> deploy staging and production over SSH ->
verify.yml -> a real chat through each API -> deploy a second build to staging and roll it back -> summary table.
Deploys and the rollback print one line per task as it finishes (`make ... PROGRESS=1`, from ansible-runner's
events); the summary reads each run's stats back from .artifacts/ansible/<ident>/ (scripts/playbook.py).
`make demo-down` (this script with `down`) removes the stacks and the testbed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script (make demo): make scripts.playbook importable

from scripts.playbook import ARTIFACTS, PlaybookResult  # noqa: E402 (after the path tweak above)

TESTBED_ENV = ROOT / ".testbed" / "env"
# The one table of environments: name -> port, compose project, public hostname.
ENVIRONMENTS = yaml.safe_load((ROOT / "environments.yml").read_text())["environments"]
STACKS = {name: env["port"] for name, env in ENVIRONMENTS.items()}
RUN_PREFIX = time.strftime("demo-%Y%m%dT%H%M%S")  # this demo's runs in .artifacts/ansible/
timings: dict[str, float] = {}


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def run(*argv: str, env: dict[str, str] | None = None, capture: bool = False) -> str:
    """Run a command with its output visible (or captured), failing the demo with its exit code."""
    print("$ " + " ".join(argv), flush=True)
    result = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, **(env or {})}, text=True, stdout=subprocess.PIPE if capture else None
    )
    if result.returncode != 0:
        sys.exit(f"demo: `{' '.join(argv)}` failed with exit code {result.returncode}")
    return result.stdout or ""


def playbook_target(target: str, run_name: str, *args: str, env: dict[str, str]) -> PlaybookResult:
    """`make deploy|rollback ...` with progress lines; its outcome read back from the run's stats and events."""
    ident = f"{RUN_PREFIX}-{run_name}"
    run("make", "--no-print-directory", target, *args, "PROGRESS=1", f"RUN_IDENT={ident}", env=env)
    return PlaybookResult.load(ARTIFACTS / ident)


def describe(result: PlaybookResult) -> str:
    """One line from a run's stats: changes and its slowest task."""
    slowest = result.slowest(1)
    longest = f"; slowest task: {slowest[0].task} ({slowest[0].seconds:.1f} s)" if slowest else ""
    return f"{result.status} in {result.seconds:.1f} s, {result.changed} changed{longest}"


def timed(name: str, fn, *args, **kwargs):
    start = time.monotonic()
    value = fn(*args, **kwargs)
    timings[name] = time.monotonic() - start
    return value


def testbed() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in TESTBED_ENV.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip().strip('"') for k, v in pairs if not k.startswith("#")}


def deploy_env(tb: dict[str, str]) -> dict[str, str]:
    """Registry credentials for ansible-playbook, from the testbed's 0600 file: environment only, never argv."""
    password = Path(tb["REGISTRY_PASSWORD_FILE"]).read_text().strip()
    return {"REGISTRY_USERNAME": tb["REGISTRY_USER"], "REGISTRY_PASSWORD": password}


def setup_env(tb: dict[str, str]) -> dict[str, str]:
    """make setup's secrets, from the testbed's 0600 files: the admin account's sudo password and the tunnel's
    credentials, in the environment only."""
    return {
        "MAC_ADMIN_PASSWORD": Path(tb["ADMIN_PASSWORD_FILE"]).read_text().strip(),
        "CLOUDFLARED_TUNNEL_CREDENTIALS": Path(tb["CLOUDFLARED_CREDENTIALS_FILE"]).read_text(),
    }


def build_and_push(variant: str = "") -> str:
    out = run("bash", "scripts/build-push.sh", env={"BUILD_VARIANT": variant} if variant else None, capture=True)
    print(out, end="")
    tags = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("IMAGE_TAG=")]
    if not tags:
        sys.exit("demo: scripts/build-push.sh did not report IMAGE_TAG=")
    return tags[-1]


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback URL we built)
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
    except OSError as err:
        return 0, {"error": str(err)}


def chat(port: int, model: str) -> str:
    import ollama  # the official client, as the website's agent would use it

    client = ollama.Client(host=f"http://127.0.0.1:{port}", timeout=120)
    reply = client.chat(model=model, messages=[{"role": "user", "content": "Say hello in five words."}])
    return reply.message.content or ""


def main() -> None:
    started = time.monotonic()
    step("1/8 Testbed: dockerd, registry (htpasswd), SSH 'Mac Mini', Ollama, cloudflared stand-in")
    timed("testbed", run, "make", "--no-print-directory", "testbed-up")
    tb = testbed()
    ollama_kind = "the REAL Ollama on :11434" if tb.get("OLLAMA_KIND") == "real" else "the Ollama double"
    print(f"Chats will be answered by {ollama_kind} (model {tb['MODEL_NAME']}).")
    secrets = deploy_env(tb)

    step("2/8 make setup INVENTORY=local: the 'Mac' as code, as its admin (deploy account, sshd, Ollama, tunnel)")
    setup = playbook_target("setup", "setup", "INVENTORY=local", env=setup_env(tb))
    print(f"  setup: {describe(setup)}")

    step("3/8 Build the image and push :sha-<hash> and :staging to the testbed registry")
    tag1 = timed("build+push", build_and_push)

    deploys: dict[str, PlaybookResult] = {}
    for name, port in STACKS.items():
        step(f"4/8 Deploy {tag1} to {name} (:{port}) over SSH with ansible/deploy.yml")
        deploys[name] = playbook_target(
            "deploy", f"deploy-{name}", "INVENTORY=local", f"ENV={name}", f"IMAGE_TAG={tag1}", env=secrets
        )
        print(f"  {name}: {describe(deploys[name])}")

    step("5/8 verify.yml: host, Ollama, cloudflared and both stacks")
    timed("verify", run, "make", "--no-print-directory", "verify", "INVENTORY=local", env=secrets)

    step(f"6/8 A real chat through each deployed API (answered by {ollama_kind})")
    for name, port in STACKS.items():
        answer = chat(port, tb["MODEL_NAME"])
        print(f"  {name:<10} http://127.0.0.1:{port}/api/chat -> {answer[:70]!r}")

    step("7/8 Deploy a second build to staging, then roll it back")
    tag2 = timed("build #2", build_and_push, "demo-second-build")
    second = playbook_target("deploy", "deploy2-staging", "INVENTORY=local", "ENV=staging", f"IMAGE_TAG={tag2}",
                             env=secrets)  # fmt: skip
    _, health = get_json(f"http://127.0.0.1:{STACKS['staging']}/health")
    print(f"  staging now runs {health.get('version')} ({describe(second)})")
    rollback = playbook_target("rollback", "rollback-staging", "INVENTORY=local", "ENV=staging", env=secrets)
    print(f"  rollback: {describe(rollback)}")

    step("8/8 Summary")
    print(f"\n| {'environment':<11} | {'URL':<22} | {'running tag':<17} | {'health':<12} | {'deploy time':>11} "
          f"| {'changed':>7} |")  # fmt: skip
    print(f"|{'-' * 13}|{'-' * 24}|{'-' * 19}|{'-' * 14}|{'-' * 13}|{'-' * 9}|")
    healthy = True
    for name, port in STACKS.items():
        url = f"http://127.0.0.1:{port}"
        _, live = get_json(f"{url}/health")
        ready_status, _ = get_json(f"{url}/ready")
        health = "ready" if ready_status == 200 else f"NOT READY ({ready_status})"
        healthy &= ready_status == 200 and live.get("version") == tag1
        print(f"| {name:<11} | {url:<22} | {live.get('version', '?'):<17} | {health:<12} | "
              f"{deploys[name].seconds:>9.1f} s | {deploys[name].changed:>7} |")  # fmt: skip
    rolled_back = get_json(f"http://127.0.0.1:{STACKS['staging']}/health")[1].get("version") == tag1
    print(f"\nRollback: staging {tag2} -> {tag1}: {'done' if rolled_back else 'FAILED'}")
    print(f"Answered by {ollama_kind}. Total {time.monotonic() - started:.0f} s "
          f"(build+push {timings['build+push']:.0f} s, rollback {rollback.seconds:.1f} s).")  # fmt: skip
    print(f"Each run's events and stats: {ARTIFACTS.relative_to(ROOT)}/{RUN_PREFIX}-*/")
    if not (healthy and rolled_back):
        sys.exit("demo: an environment is not healthy or the rollback did not restore the first tag")


def down() -> None:
    step("Removing the demo stacks and the testbed")
    for env in ENVIRONMENTS.values():
        project = env["compose_project"]
        subprocess.run(["docker", "compose", "-p", project, "down", "--remove-orphans"], cwd=ROOT, check=False)
    run("make", "--no-print-directory", "testbed-down")


if __name__ == "__main__":
    down() if sys.argv[1:] == ["down"] else main()
