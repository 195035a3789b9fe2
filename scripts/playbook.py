"""Run the project's playbooks through ansible-runner and read the outcome from its events, never from text.

One place that runs ansible-playbook: `make deploy|verify|rollback` (`python -m scripts.playbook PLAYBOOK ARGS`),
the e2e harness, `make demo` and `make bench-deploy`. ARGS are ansible-playbook's own (`-i inventories/staging -e
image_tag=...`), passed through unchanged; ansible/ansible.cfg always applies.

    result = run("ansible/verify.yml", "-i", "inventories/local", on_event=ProgressPrinter())
    result.status, result.rc     # ansible-runner's status (successful|failed|timeout|canceled), ansible's exit code
    result.recap                 # {host: {ok, changed, unreachable, failed, skipped, rescued, ignored}}
    result.failures              # [TaskResult(host, task, status, seconds, message)] of failed/unreachable tasks
    result.tasks, result.slowest(5), result.output   # every task result with its duration; ansible's text

Each run gets a private data dir of its own (in a temporary directory, removed afterwards) and leaves
`.artifacts/ansible/<ident>/` with exactly two files, what a workflow uploads: `events.jsonl` (ansible-runner's
events, written as they arrive) and `stats.json` (status, exit code, recap, failed tasks).

Secrets come from the process environment (REGISTRY_PASSWORD, ...) and never reach a file. ansible-runner writes
the whole environment of the run into `artifacts/<ident>/command` (ansible_runner/runner.py, Runner.run: no
setting suppresses it; `suppress_env_files` only covers env/envvars and friends). So the environment ansible-runner
sees holds only its own settings and ANSIBLE_CONFIG/ANSIBLE_NOCOLOR; the caller's environment travels through a
FIFO (read once, as ansible-runner itself hands an SSH key to ssh-agent) to a small wrapper that execs
ansible-playbook with it. No-log task results are censored by Ansible itself in the events.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import getpass
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_CFG = ROOT / "ansible" / "ansible.cfg"
ARTIFACTS = ROOT / ".artifacts" / "ansible"  # git-ignored; the deploy workflows upload it
EVENTS_FILE, STATS_FILE = "events.jsonl", "stats.json"
# The ansible-playbook of the Python running this module (the venv's), which ansible-runner's Python API matches.
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")

# Set for every run, whatever the caller's environment says. The pty ansible-runner gives ansible-playbook would
# otherwise colour every line, and the events are a record to search.
FORCED_SETTINGS = {"ANSIBLE_CONFIG": str(ANSIBLE_CFG), "ANSIBLE_NOCOLOR": "1"}
# ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False unless it is already set (ansible_runner/config/_base.py,
# prepare_env); removed again so that ansible.cfg's host_key_checking = True applies, as with ansible-playbook.
RUNNER_DEFAULTS_REFUSED = ("ANSIBLE_HOST_KEY_CHECKING",)
# A task's final result for one host (per-item events of loops are left out: the final one carries the loop).
RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
# playbook_on_stats' keys -> the names of ansible-playbook's PLAY RECAP line.
RECAP_NAMES = {
    "ok": "ok",
    "changed": "changed",
    "dark": "unreachable",
    "failures": "failed",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}
FAILED = ("failed", "unreachable")  # what counts as a failure of the run (an ignored failure does not)
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_EXEC = "--exec-with-environment"  # internal: the wrapper ansible-runner starts (see _exec_with_environment)

Event = dict[str, Any]


@dataclass(frozen=True)
class TaskResult:
    """One host's final result of one task, from its runner_on_* event."""

    host: str
    task: str  # as ansible-playbook prints it: "role : name", or the name alone
    status: str  # ok | changed | failed | unreachable | skipped | ignored (failed with ignore_errors)
    seconds: float
    message: str = ""  # for failed, unreachable and ignored results: what the task said
    action: str = ""  # the action that ran, as Ansible resolved it: "ansible.builtin.assert", "release_lock", ...

    @classmethod
    def from_event(cls, event: Event) -> TaskResult | None:
        status = RESULT_EVENTS.get(event.get("event", ""))
        data = event.get("event_data") or {}
        if status is None or "host" not in data:
            return None
        res = data.get("res") or {}
        if status == "ok" and res.get("changed"):
            status = "changed"
        elif status == "failed" and data.get("ignore_errors"):
            status = "ignored"
        name = (data.get("task") or "").strip()
        role = data.get("role")
        return cls(
            host=data["host"],
            task=f"{role} : {name}" if role else name,
            status=status,
            seconds=float(data.get("duration") or 0.0),
            message=_message(res) if status in ("failed", "unreachable", "ignored") else "",
            action=data.get("task_action") or "",
        )


def recap(stats_event: Event) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counts per host of a playbook_on_stats event."""
    stats = stats_event.get("event_data") or {}
    hosts = set().union(*(stats.get(key) or {} for key in RECAP_NAMES))
    return {
        host: {name: int((stats.get(key) or {}).get(host, 0)) for key, name in RECAP_NAMES.items()}
        for host in sorted(hosts)
    }


def _message(res: Mapping[str, Any]) -> str:
    """What a failed result says: its msg (and each failed loop item's), else its stderr. A no_log result is
    already censored by Ansible and says so."""
    items = [item for item in res.get("results") or [] if isinstance(item, dict) and item.get("failed")]
    parts = [res.get("msg") or res.get("censored")] + [item.get("msg") or item.get("censored") for item in items]
    text = " | ".join(str(part) for part in parts if part)
    return text or str(res.get("stderr") or res.get("module_stderr") or "")


@dataclass
class PlaybookResult:
    """The outcome of one run, computed from its events."""

    playbook: str
    args: list[str]
    ident: str
    status: str  # ansible-runner's: successful | failed | timeout | canceled
    rc: int  # ansible-playbook's exit code (254 when ansible-runner ended it: timeout or cancel)
    seconds: float
    artifacts: Path
    events: list[Event] = field(repr=False)

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP per host, from the playbook_on_stats event; {} when no play ran (e.g. a syntax error)."""
        stats = next((e for e in self.events if e.get("event") == "playbook_on_stats"), None)
        return recap(stats) if stats else {}

    @property
    def changed(self) -> int:
        """Changed results over all hosts (the recap's changed=, summed)."""
        return sum(counts["changed"] for counts in self.recap.values())

    @property
    def tasks(self) -> list[TaskResult]:
        """Every task's final result per host, in the order they finished."""
        return [task for task in map(TaskResult.from_event, self.events) if task is not None]

    @property
    def failures(self) -> list[TaskResult]:
        """Failed and unreachable results, with their messages (including failures a rescue block handled)."""
        return [task for task in self.tasks if task.status in FAILED]

    def slowest(self, count: int = 5) -> list[TaskResult]:
        return sorted(self.tasks, key=lambda task: task.seconds, reverse=True)[:count]

    @property
    def output(self) -> str:
        """ansible-playbook's human-readable output (what it prints on a terminal), rebuilt from the events."""
        return "".join(stdout_lines(self.events))

    def stats(self) -> dict[str, Any]:
        """What stats.json holds: the run and its outcome, without the events."""
        return {
            "ident": self.ident,
            "playbook": self.playbook,
            "args": self.args,
            "status": self.status,
            "rc": self.rc,
            "seconds": round(self.seconds, 3),
            "recap": self.recap,
            "failures": [asdict(task) for task in self.failures],
        }

    @classmethod
    def load(cls, directory: Path) -> PlaybookResult:
        """A finished run read back from its artifacts directory (ARTIFACTS / ident)."""
        stats = json.loads((directory / STATS_FILE).read_text())
        events = [json.loads(line) for line in (directory / EVENTS_FILE).read_text().splitlines() if line]
        return cls(
            playbook=stats["playbook"],
            args=stats["args"],
            ident=stats["ident"],
            status=stats["status"],
            rc=stats["rc"],
            seconds=stats["seconds"],
            artifacts=directory,
            events=events,
        )


def stdout_lines(events: Iterable[Event]) -> Iterable[str]:
    """The text each event carries, as ansible-runner writes its stdout file (the pty's \\r\\n made \\n)."""
    for event in events:
        text = event.get("stdout")
        if text or event.get("event") == "verbose":  # verbose events are raw lines, blank ones included
            yield (text or "").replace("\r\n", "\n") + "\n"


def run(
    playbook: str | os.PathLike,
    *args: str,
    env: Mapping[str, str] | None = None,
    on_event: Callable[[Event], object] | None = None,
    ident: str | None = None,
    private_data_dir: Path | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
    artifacts_root: Path = ARTIFACTS,
) -> PlaybookResult:
    """Run `ansible-playbook PLAYBOOK ARGS` through ansible-runner, from the current directory.

    env: the environment ansible-playbook gets (default: this process's), secrets included; ANSIBLE_CONFIG is
      always ansible/ansible.cfg. on_event: called with each ansible-runner event as it happens (exceptions it
      raises are re-raised after the run, which is never cut short by them). ident: names the artifacts
      directory (default: UTC time, playbook, random suffix). private_data_dir: ansible-runner's working
      directory, kept for inspection when given, else a temporary one removed afterwards. timeout: seconds before
      ansible-runner kills the run (status "timeout"). cancel: set it to kill the run (status "canceled").
    """
    import ansible_runner  # here, not at the top: the exec wrapper below must start quickly

    playbook = str(playbook)
    ident = ident or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{Path(playbook).stem}-{secrets.token_hex(3)}"
    if not IDENT.fullmatch(ident):
        raise ValueError(f"run ident {ident!r}: use 1-100 letters, digits, '.', '_' or '-', starting with one")
    artifacts = artifacts_root / ident
    artifacts.mkdir(parents=True, exist_ok=False)  # FileExistsError: never mix two runs' records
    # The run's temporary directory: the FIFO and, unless the caller names one, ansible-runner's private data dir.
    # Removed afterwards; a run killed with SIGKILL leaves it (nothing secret is ever written into it).
    scratch = Path(tempfile.mkdtemp(prefix=f"playbook-{ident}-"))
    private = Path(private_data_dir or scratch / "private")
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    handoff = _EnvironmentHandoff(dict(os.environ if env is None else env), scratch / "environment")
    recorder = _Recorder(artifacts / EVENTS_FILE, on_event)
    stop = threading.Event()
    started = time.monotonic()
    try:
        command = [_EXEC, handoff.fifo, str(os.getpid()), "--", str(ANSIBLE_PLAYBOOK), playbook, *args]
        thread, runner = ansible_runner.run_async(
            private_data_dir=str(private),
            ident=ident,
            # A wrapper instead of ansible-playbook itself (binary), which takes the environment from the FIFO.
            binary=sys.executable,
            cmdline=shlex.join([str(Path(__file__).resolve()), *command]),
            project_dir=os.getcwd(),  # ansible-runner's cwd for the run: relative paths mean what they say
            envvars=FORCED_SETTINGS,
            suppress_env_files=True,  # no env/envvars, env/cmdline ... files in the private data dir
            fact_cache_type="memory",  # ansible's default; ansible-runner's jsonfile cache would write facts
            quiet=True,  # the events are printed by on_event, as the caller wants them
            settings={"pexpect_timeout": 1},  # how often cancel/timeout are checked while ansible is silent
            timeout=timeout,
            event_handler=recorder,
            status_handler=_runner_settings_only,
            cancel_callback=lambda: stop.is_set() or (cancel is not None and cancel.is_set()),
        )
        try:
            while thread.is_alive():
                thread.join(0.2)
        except BaseException:  # KeyboardInterrupt in the caller: end ansible-playbook too, then go on raising
            stop.set()
            thread.join()
            raise
    finally:
        handoff.close()
        recorder.close()
        shutil.rmtree(scratch, ignore_errors=True)
    result = PlaybookResult(
        playbook=playbook,
        args=list(args),
        ident=ident,
        status=runner.status,
        # None when ansible-playbook died of a signal ansible-runner did not send.
        rc=runner.rc if isinstance(runner.rc, int) else 1,
        seconds=time.monotonic() - started,
        artifacts=artifacts,
        events=recorder.events,
    )
    (artifacts / STATS_FILE).write_text(json.dumps(result.stats(), indent=2) + "\n")
    if recorder.error is not None:
        raise RuntimeError(f"on_event failed during the run ({artifacts})") from recorder.error
    return result


def _runner_settings_only(status: Mapping[str, Any], runner_config: Any) -> None:
    """ansible-runner's status handler, called with "starting" right before it writes artifacts/<ident>/command
    (the run's environment) and starts the wrapper with that same environment: reduce it to what ansible-runner
    set or changed (its callback plugin, artifact dir, ...) and FORCED_SETTINGS. The caller's environment, secrets
    included, reaches ansible-playbook through the FIFO only."""
    if status.get("status") != "starting":
        return
    runner_config.env = {
        key: value
        for key, value in runner_config.env.items()
        if (key in FORCED_SETTINGS or os.environ.get(key) != value) and key not in RUNNER_DEFAULTS_REFUSED
    }


class _Recorder:
    """ansible-runner's event handler: keeps each event, appends it to events.jsonl at once (a killed run leaves
    what happened until then) and passes it on to on_event."""

    def __init__(self, path: Path, on_event: Callable[[Event], object] | None) -> None:
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._file = path.open("w", encoding="utf-8")
        self._on_event = on_event

    def __call__(self, event: Event) -> bool:
        self.events.append(event)
        self._file.write(json.dumps(event, sort_keys=True) + "\n")
        self._file.flush()
        if self._on_event is not None and self.error is None:
            try:
                self._on_event(event)
            except Exception as exc:  # noqa: BLE001 (kept and re-raised once the run is over)
                self.error = exc
        return True  # ansible-runner also keeps it in its job_events/ (in the private data dir)

    def close(self) -> None:
        self._file.close()


class _EnvironmentHandoff:
    """The caller's environment as JSON in a FIFO (mode 0600, in the run's 0700 temporary directory), written once
    to the wrapper that reads it; a FIFO keeps nothing on disk."""

    def __init__(self, environment: Mapping[str, str], fifo: Path) -> None:
        self.fifo = str(fifo)
        os.mkfifo(self.fifo, stat.S_IRUSR | stat.S_IWUSR)
        payload = json.dumps(dict(environment)).encode()
        self._writer = threading.Thread(target=self._write, args=(payload,), daemon=True)
        self._writer.start()

    def _write(self, payload: bytes) -> None:
        with contextlib.suppress(BrokenPipeError), open(self.fifo, "wb") as pipe:  # blocks until a reader opens
            pipe.write(payload)

    def close(self) -> None:
        if self._writer.is_alive():  # the wrapper never started: open the read end so that the writer finishes
            reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            os.close(reader)
            self._writer.join(timeout=5)
        os.unlink(self.fifo)


def _exec_with_environment(argv: list[str]) -> None:
    """The process ansible-runner starts: FIFO PARENT_PID -- PROGRAM ARGS. Reads the caller's environment from the
    FIFO, lays ansible-runner's own settings over it and execs PROGRAM (ansible-playbook) in its place.

    On Linux it also asks the kernel to SIGKILL it when its parent (the process running ansible-runner) dies
    (prctl PR_SET_PDEATHSIG, man 2 prctl; it survives execve): a `make deploy` or e2e deploy killed with SIGKILL
    takes ansible-playbook with it, as when ansible-playbook itself was the child. ansible-runner runs it on a pty
    in a session of its own with SIGHUP ignored, so nothing else would stop it."""
    fifo, parent, separator, *command = argv
    if separator != "--" or not command:
        sys.exit(f"usage: playbook.py {_EXEC} FIFO PARENT_PID -- PROGRAM [ARGS...]")
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        sys.exit(1)
    # No controlling terminal (ioctl TIOCNOTTY, man 4 tty_ioctl): ansible-runner's pty would be one, and whatever
    # asks on /dev/tty (ssh about an unknown host key, a password prompt) would wait for an answer nobody can see
    # or give. Without one it fails at once, as in CI. stdout and stderr stay the pty.
    with contextlib.suppress(OSError):
        fcntl.ioctl(sys.stdin.fileno(), termios.TIOCNOTTY)
    with open(fifo, encoding="utf-8") as pipe:
        environment = json.load(pipe)
    environment.update(os.environ)  # ansible-runner's settings (its callback plugin, ...) win
    try:
        os.execve(command[0], command, environment)  # noqa: S606 (argv from run() above, no shell)
    except OSError as exc:
        sys.exit(f"cannot start {command[0]}: {exc}")


class ProgressPrinter:
    """One line per play and per task result as they happen, and the recap; skipped tasks are left out, like
    ansible.cfg's display_skipped_hosts = False. Failures carry their message on the next line."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        data = event.get("event_data") or {}
        kind = event.get("event")
        if kind == "playbook_on_play_start":
            self._print(f"PLAY [{data.get('name') or data.get('pattern', '')}]")
        elif kind == "playbook_on_stats":
            for host, counts in recap(event).items():
                self._print(f"RECAP [{host}] " + " ".join(f"{name}={count}" for name, count in counts.items()))
        elif (task := TaskResult.from_event(event)) is not None and task.status != "skipped":
            status = task.status.upper() if task.status in FAILED else task.status
            self._print(f"  {status:<11} {task.seconds:6.2f} s  [{task.host}] {task.task}")
            if task.message:
                self._print("      " + " ".join(task.message.split()))

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def print_output(event: Event) -> None:
    """ansible-playbook's own output, line by line as it happens (the CLI's default)."""
    sys.stdout.write("".join(stdout_lines([event])))
    sys.stdout.flush()


def artifact_files(*roots: Path) -> list[Path]:
    """Every regular file under the given directories (default: every run's artifacts), for greps."""
    found: list[Path] = []
    for root in roots or (ARTIFACTS,):
        found += sorted(path for path in Path(root).rglob("*") if path.is_file() and not path.is_symlink())
    return found


def files_containing(secret: str, *roots: Path) -> list[Path]:
    """Artifact files that contain `secret`, as written or JSON-escaped (how events and stats.json store text):
    `assert files_containing(password, result.artifacts) == []`."""
    if not secret:
        raise ValueError("files_containing needs a non-empty secret")
    forms = {secret.encode(), json.dumps(secret)[1:-1].encode(), json.dumps(secret, ensure_ascii=False)[1:-1].encode()}
    return [path for path in artifact_files(*roots) if any(form in path.read_bytes() for form in forms)]


def with_asked_secrets(
    environ: Mapping[str, str],
    names: list[str],
    ask: Callable[[str], str] = getpass.getpass,
    interactive: bool | None = None,
) -> dict[str, str]:
    """environ plus each of names that it lacks, asked for with `ask` (getpass: not echoed). A name that is set,
    even to '', is taken as it is (e.g. a passwordless sudo). Without a terminal to ask on, a missing one is a
    ValueError naming it."""
    env = dict(environ)
    interactive = sys.stdin.isatty() if interactive is None else interactive
    for name in names:
        if name in env:
            continue
        if not interactive:
            raise ValueError(f"{name} is not set and there is no terminal to ask for it on")
        env[name] = ask(f"{name}: ")
    return env


def parse_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.playbook",
        description="Run an Ansible playbook through ansible-runner; keep its events and stats in "
        f"{ARTIFACTS.relative_to(ROOT)}/<ident>/. Exit code: ansible-playbook's.",
    )
    parser.add_argument("--progress", action="store_true", help="one line per task result instead of ansible's output")
    parser.add_argument("--ident", help="name of the run's artifacts directory (default: time, playbook, random)")
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS, help="where the run's directory goes")
    parser.add_argument(
        "--ask-env",
        metavar="NAME",
        action="append",
        default=[],
        help="a secret the playbook reads from its environment: asked for on the terminal (not echoed) unless NAME is "
        "set; never on a command line or in a file",
    )
    parser.add_argument("playbook", help="e.g. ansible/deploy.yml")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="ansible-playbook's arguments (-i, -e, -v, ...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [_EXEC]:
        _exec_with_environment(argv[1:])
    options = parse_cli(argv)
    try:
        env = with_asked_secrets(os.environ, options.ask_env)
    except ValueError as exc:
        print(f"playbook: {exc}", file=sys.stderr)
        return 2
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())  # CI cancelling the job: end ansible-playbook too
    try:
        result = run(
            options.playbook,
            *options.args,
            on_event=ProgressPrinter() if options.progress else print_output,
            ident=options.ident,
            cancel=cancel,
            artifacts_root=options.artifacts,
            env=env,
        )
    except (ValueError, FileExistsError) as exc:
        print(f"playbook: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("playbook: interrupted; ansible-playbook was stopped", file=sys.stderr)
        return 130
    print(f"playbook: {result.status} (rc {result.rc}, {result.seconds:.1f} s); events and stats in "
          f"{result.artifacts}", file=sys.stderr)  # fmt: skip
    return result.rc


if __name__ == "__main__":
    sys.exit(main())
