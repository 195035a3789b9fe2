"""The GitHub workflows cannot drift from the code they call.

Every `run:` step is read; `make` calls are expanded with `make -n` (the real recipe, not a copy of
it), and every resulting playbook command (`python -m scripts.playbook PLAYBOOK ARGS`, read with that module's
own parser, or a bare `ansible-playbook`) must name an existing playbook and inventory and pass only variables
that the playbook's roles declare. Secrets and variables must be documented in docs/ci-cd.md's table, deploy jobs
must sit behind their GitHub Environment, and third-party actions must be pinned. Local composite actions
(.github/actions/<name>) are read as part of the job that uses them: their steps are checked the same way.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts.playbook import ARTIFACTS, parse_cli
from tests.makefile import make_targets

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
DEPLOYING = ("deploy-staging.yml", "deploy-production.yml", "rollback.yml")
SETUP_ACTION = "./.github/actions/deploy-setup"  # shared by the DEPLOYING workflows
PINNED = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}")
# Values a workflow expression would supply at run time; only their shape matters to the expansion.
EXPRESSION_SAMPLES = {"IMAGE_TAG": "sha-0123abc", "TARGET_ENV": "staging"}
AUTOMATIC_SECRETS = {"GITHUB_TOKEN"}  # created by GitHub for every run
CI_DOC = "docs/ci-cd.md"  # its "Secrets and variables" table documents every secret and variable the workflows read


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    # PyYAML reads the bare key `on` as the boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def local_action(ref: str) -> dict | None:
    """The action.yml of a local action (`uses: ./.github/actions/<name>`), or None for any other `uses`."""
    if not ref.startswith("./"):
        return None
    path = ROOT / ref / "action.yml"
    assert path.is_file(), f"{ref}: no action.yml"
    return yaml.safe_load(path.read_text())


def job_steps(job: dict) -> list[dict]:
    """What a job runs: its steps, each local composite action followed by that action's own steps."""
    found = []
    for step in job.get("steps", []):
        found.append(step)
        action = local_action(step.get("uses", ""))
        if action:
            assert action["runs"]["using"] == "composite", step["uses"]
            found += action["runs"]["steps"]
    return found


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job_steps(job):
            yield job_name, job, step


def run_commands(workflow: dict):
    """Each shell line of each `run:` step, with `${VAR}`/`$VAR` filled from the step env or samples."""
    for job_name, _job, step in steps(workflow):
        if "run" not in step:
            continue
        env = {k: EXPRESSION_SAMPLES.get(k, f"<{k}>") for k in step.get("env", {})}
        for line in step["run"].splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            filled = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m, env=env: env.get(m.group(1), m.group(0)), line)
            yield job_name, step, filled


def expand_make(argv: list[str]) -> list[list[str]]:
    """The commands `make` would run for argv (dry run: nothing executes)."""
    cmd = ["make", "-n", "--no-print-directory", *argv[1:]]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def playbook_call(cmd: list[str]) -> list[str] | None:
    """The ansible-playbook argv a command amounts to, or None: ansible-playbook itself, or scripts/playbook.py
    (`python -m scripts.playbook [its options] PLAYBOOK ARGS`), which passes ARGS to ansible-playbook."""
    if cmd and cmd[0].endswith("ansible-playbook"):
        return cmd
    if len(cmd) > 2 and cmd[0].endswith("python") and cmd[1:3] == ["-m", "scripts.playbook"]:
        options = parse_cli(cmd[3:])
        return ["ansible-playbook", options.playbook, *options.args]
    return None


def command_words(line: str) -> list[str]:
    """The words of a shell line's first command: up to a pipe, a redirection or a list operator."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if set(word) <= set("|&;<>()"):
            break
        words.append(word)
    return words


def ansible_commands(workflow: dict) -> list[tuple[str, list[str]]]:
    found = []
    for job_name, _step, line in run_commands(workflow):
        argv = command_words(line)
        commands = expand_make(argv) if argv and argv[0] == "make" else [argv]
        found += [(job_name, call) for call in map(playbook_call, commands) if call]
    return found


@pytest.mark.parametrize("target", ["deploy", "verify", "rollback"])
def test_make_targets_run_playbooks_through_the_module(target):
    # Through scripts/playbook.py, so that every run leaves the events and stats a workflow uploads.
    [command] = [c for c in expand_make(["make", target, "ENV=staging", "IMAGE_TAG=sha-0123abc"]) if playbook_call(c)]
    assert command[:3] == [".venv/bin/python", "-m", "scripts.playbook"], command
    assert playbook_call(command)[1] == f"ansible/{target}.yml"
    command = expand_make(["make", target, "INVENTORY=local", "ENV=staging", "PROGRESS=1", "RUN_IDENT=demo-1"])[-1]
    options = parse_cli(command[3:])
    assert options.progress and options.ident == "demo-1"
    assert options.args[:2] == ["-i", "inventories/local"]


def parse_playbook_call(argv: list[str]) -> tuple[str, str, list[str]]:
    playbook, inventory, extra = None, None, []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-i", "--inventory"):
            inventory = next(args)
        elif arg in ("-e", "--extra-vars"):
            extra += [pair.split("=", 1)[0] for pair in shlex.split(next(args))]
        elif arg.endswith(".yml"):
            playbook = arg
    return playbook, inventory, extra


ROLES_DIR = ROOT / "ansible" / "roles"


def plays_of(playbook: Path) -> list[dict]:
    """The plays a playbook runs, those of the playbooks it imports included."""
    plays = []
    for item in yaml.safe_load(playbook.read_text()) or []:
        imported = item.get("ansible.builtin.import_playbook")
        plays += plays_of(playbook.parent / imported) if imported else [item]
    return plays


def roles_of(playbook: Path) -> set[str]:
    """Roles a playbook runs: named in its plays (roles:, include_role, import_role) plus their meta dependencies."""
    text = "\n".join(yaml.safe_dump(play) for play in plays_of(playbook))
    names = set(re.findall(r"(?:role|name):\s*([a-z_]+)\s*$", text, flags=re.M))
    found = {n for n in names if (ROLES_DIR / n).is_dir()}
    pending = list(found)
    while pending:
        meta = ROLES_DIR / pending.pop() / "meta" / "main.yml"
        deps = (yaml.safe_load(meta.read_text()) or {}).get("dependencies", []) if meta.exists() else []
        for dep in deps:
            name = dep["role"] if isinstance(dep, dict) else dep
            if name not in found:
                found.add(name)
                pending.append(name)
    return found


def jinja_names(value) -> set[str]:
    """Identifiers used inside {{ ... }} of a defaults value: the inputs a role's defaults are derived from."""
    names: set[str] = set()
    for expr in re.findall(r"\{\{(.*?)\}\}", yaml.safe_dump(value), flags=re.S):
        expr = re.sub(r"'[^']*'|\"[^\"]*\"", "", expr)
        names |= set(re.findall(r"(?<![\w.|])([a-z_][a-z0-9_]*)", expr))
    return names


def accepted_variables(playbook: Path) -> set[str]:
    """What -e may set: the roles' defaults and argument specs, the inputs their defaults derive from, and the
    play's own vars."""
    accepted: set[str] = set()
    for role in roles_of(playbook):
        role_dir = ROLES_DIR / role
        defaults = role_dir / "defaults" / "main.yml"
        if defaults.exists():
            data = yaml.safe_load(defaults.read_text()) or {}
            accepted |= set(data) | jinja_names(data)
        specs = role_dir / "meta" / "argument_specs.yml"
        if specs.exists():
            for spec in (yaml.safe_load(specs.read_text()) or {}).get("argument_specs", {}).values():
                accepted |= set(spec.get("options", {}))
    for play in plays_of(playbook):
        accepted |= set(play.get("vars", {}) or {})
    return accepted


def test_accepted_variables_is_not_a_blank_cheque():
    accepted = accepted_variables(ROOT / "ansible" / "deploy.yml")
    assert {"image_tag", "app_env"} <= accepted
    assert "imagetag" not in accepted and "image_tags" not in accepted


def documented_names() -> set[str]:
    doc = (ROOT / CI_DOC).read_text()
    section = doc.split("## Secrets and variables", 1)
    assert len(section) == 2, f"{CI_DOC} needs a '## Secrets and variables' section"
    body = section[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`", body, flags=re.M))


def test_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "deploy-staging.yml", "deploy-production.yml", "rollback.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_make_calls_name_existing_targets(path):
    targets = make_targets()
    calls = [command_words(line) for _j, _s, line in run_commands(load(path)) if line.startswith("make")]
    for argv in calls:
        named = [a for a in argv[1:] if "=" not in a and not a.startswith("-")]
        assert named, f"{path.name}: bare `make` runs the default target; name one"
        for target in named:
            assert target in targets, f"{path.name}: make target {target!r} is not in the Makefile"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_playbook_calls_match_the_code(path):
    for job, argv in ansible_commands(load(path)):
        playbook, inventory, extra = parse_playbook_call(argv)
        assert playbook and (ROOT / playbook).is_file(), f"{path.name}/{job}: no playbook {playbook}"
        assert inventory and (ROOT / inventory).exists(), f"{path.name}/{job}: no inventory {inventory}"
        unknown = set(extra) - accepted_variables(ROOT / playbook)
        assert not unknown, f"{path.name}/{job}: {playbook} does not declare {sorted(unknown)}"


def test_deploy_workflows_call_ansible():
    """The expansion above is not vacuous: each deploy workflow really reaches a playbook."""
    for name in ("deploy-staging.yml", "deploy-production.yml", "rollback.yml"):
        assert ansible_commands(load(ROOT / ".github" / "workflows" / name)), name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_secret_and_variable_is_documented(path):
    used = set(re.findall(r"\$\{\{\s*(?:secrets|vars)\.([A-Z0-9_]+)", path.read_text())) - AUTOMATIC_SECRETS
    missing = used - documented_names()
    assert not missing, f"{path.name} uses {sorted(missing)} but {CI_DOC}'s secrets/variables table lacks them"


def test_production_deploy_waits_for_the_environment_gate():
    wf = load(ROOT / ".github" / "workflows" / "deploy-production.yml")
    deploy_jobs = [job for job in wf["jobs"].values() if ansible_commands({"jobs": {"job": job}})]
    assert deploy_jobs, "no job in deploy-production.yml runs a playbook"
    for job in deploy_jobs:
        assert job.get("environment") == "production"
    assert "main" in wf["on"]["push"]["branches"]


def test_staging_deploy_sequence():
    wf = load(ROOT / ".github" / "workflows" / "deploy-staging.yml")
    assert wf["on"]["push"]["branches"] == ["staging"]
    jobs = wf["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["build"]["needs"] == "test" and jobs["deploy"]["needs"] == "build"
    assert jobs["build"]["permissions"]["packages"] == "write"
    uses = [s.get("uses", "") for s in job_steps(jobs["deploy"])]
    tailscale = next(s for s in job_steps(jobs["deploy"]) if "tailscale/github-action" in s.get("uses", ""))
    assert tailscale["with"]["tags"] == "tag:ci"
    assert uses.index(tailscale["uses"]) < len(uses) - 1, "the tailnet must be joined before the deploy"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_and_serialised_deploys(path):
    wf = load(path)
    assert wf.get("permissions") == {"contents": "read"}, "top-level permissions must be read-only"
    for name, job in wf["jobs"].items():
        if (job.get("permissions") or {}).get("packages") == "write":
            assert name in ("build", "promote"), f"{path.name}/{name} should not write packages"
    if path.name in DEPLOYING:
        assert wf["concurrency"]["cancel-in-progress"] is False
        assert wf["concurrency"]["group"].startswith("deploy-")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_third_party_actions_are_pinned_to_a_commit(path):
    for _job, _jobdef, step in steps(load(path)):
        ref = step.get("uses", "")
        if not ref or ref.startswith(("./", "actions/")):
            continue  # local or GitHub's own actions
        assert PINNED.fullmatch(ref), f"{path.name}: {ref} is not pinned to a commit SHA"


def test_no_step_disables_host_key_checking():
    for path in WORKFLOWS:
        assert "StrictHostKeyChecking=no" not in path.read_text(), path.name


def deploying_job(name: str) -> tuple[dict, int]:
    """The job of a deploying workflow that runs a playbook, and the index of that step among its own steps."""
    workflow = load(ROOT / ".github" / "workflows" / name)
    found = [
        (job, index)
        for job in workflow["jobs"].values()
        for index, step in enumerate(job.get("steps", []))
        if ansible_commands({"jobs": {"job": {"steps": [step]}}})
    ]
    assert len(found) == 1, f"{name}: expected one step that runs a playbook, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("name", DEPLOYING)
def test_deploying_workflows_share_the_setup_action(name):
    job, playbook_step = deploying_job(name)
    own = job["steps"]
    uses = [step.get("uses", "") for step in own]
    assert SETUP_ACTION in uses, f"{name}: the deploy job does not use {SETUP_ACTION}"
    assert uses.index(SETUP_ACTION) < playbook_step, f"{name}: the setup must come before the playbook"
    assert uses.index("actions/checkout@v6") < uses.index(SETUP_ACTION), "a local action needs the checkout first"
    # Set up there only, not again in the workflow itself.
    assert not [u for u in uses if "tailscale/github-action" in u], name
    runs = " ".join(step.get("run", "") for step in own)
    assert "make ssh-setup" not in runs and "make venv" not in runs, name


def test_the_setup_action_joins_the_tailnet_and_calls_existing_make_targets():
    action = local_action(SETUP_ACTION)
    action_steps = action["runs"]["steps"]
    calls = [shlex.split(step["run"]) for step in action_steps if "run" in step]
    assert calls == [["make", "venv"], ["make", "ssh-setup"]]
    for argv in calls:
        assert argv[1] in make_targets(), f"{SETUP_ACTION}: make target {argv[1]!r} is not in the Makefile"
    assert all(step.get("shell") == "bash" for step in action_steps if "run" in step), "composite run steps need shell"
    [tailscale] = [step for step in action_steps if "tailscale/github-action" in step.get("uses", "")]
    assert PINNED.fullmatch(tailscale["uses"]) and tailscale["with"]["tags"] == "tag:ci"
    # Every input is declared and used; secrets reach it as inputs only (composite actions cannot read them).
    text = (ROOT / SETUP_ACTION / "action.yml").read_text()
    assert set(re.findall(r"\$\{\{\s*inputs\.([\w-]+)", text)) == set(action["inputs"])
    assert "secrets." not in text
    for name in DEPLOYING:
        job, _ = deploying_job(name)
        [setup] = [step for step in job["steps"] if step.get("uses") == SETUP_ACTION]
        assert set(setup["with"]) == {key for key, spec in action["inputs"].items() if spec.get("required")}, name


@pytest.mark.parametrize("name", DEPLOYING)
def test_deploying_workflows_upload_the_runs_events_and_stats(name):
    job, playbook_step = deploying_job(name)
    uploads = [(i, s) for i, s in enumerate(job["steps"]) if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert len(uploads) == 1, f"{name}: expected one upload-artifact step"
    [(index, upload)] = uploads
    assert PINNED.fullmatch(upload["uses"]), f"{name}: {upload['uses']} is not pinned to a commit SHA"
    assert index > playbook_step, f"{name}: the upload must come after the playbook ran"
    assert upload.get("if") in ("always()", "${{ always() }}"), f"{name}: upload also when the deploy failed"
    # Exactly the directory scripts/playbook.py writes (events.jsonl + stats.json per run), nothing more.
    assert upload["with"]["path"].rstrip("/") == str(ARTIFACTS.relative_to(ROOT))
    if ARTIFACTS.relative_to(ROOT).parts[0].startswith("."):  # upload-artifact >= v4.4 skips hidden paths by default
        assert upload["with"].get("include-hidden-files") is True, f"{name}: the upload would find no files"


def test_the_macos_rehearsal_runs_setup_twice_and_requires_no_change_the_second_time():
    workflow = load(ROOT / ".github" / "workflows" / "setup-macos.yml")
    [(job_name, job)] = workflow["jobs"].items()
    assert all(os.startswith("macos-") for os in job["strategy"]["matrix"]["os"])
    calls = [call for _job, call in ansible_commands(workflow)]
    assert len(calls) == 2 and calls[0] == calls[1], calls
    assert calls[0][:4] == ["ansible-playbook", "ansible/setup.yml", "-i", "inventories/macos-ci"]
    # Only Docker Desktop's install is left out (no Docker engine on the runners), by the one task that has the tag.
    assert calls[0][4:] == ["--skip-tags", "docker_desktop"]
    tagged = [
        task["name"]
        for path in sorted((ROOT / "ansible" / "roles").glob("*/tasks/*.yml"))
        for task in yaml.safe_load(path.read_text()) or []
        if "docker_desktop" in task.get("tags", [])
    ]
    assert tagged == ["Install Docker Desktop with Homebrew"]
    second = next(step["run"] for step in job["steps"] if "again" in step.get("name", ""))
    assert "changed=0 +unreachable=0 +failed=0" in second
