"""scripts/playbook.py runs real playbooks through ansible-runner; everything is read back from its events.

Each test runs ansible-playbook for real (ansible/ansible.cfg) against the controller itself
(tests/runner/inventory.yml: ansible_connection=local), through the Python API or the CLI the Makefile calls.
Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scripts import playbook
from scripts.playbook import ROOT, PlaybookResult, TaskResult
from tests.e2e.harness import wait_for

HERE = Path(__file__).resolve().parent
PLAYBOOKS = HERE / "playbooks"
INVENTORY = HERE / "inventory.yml"
HOST = "localhost"
# What a run may leave in its artifacts directory: what the deploy workflows upload.
RECORD = {playbook.EVENTS_FILE, playbook.STATS_FILE}


@pytest.fixture
def artifacts(tmp_path) -> Path:
    return tmp_path / "artifacts"


def run(name: str, *args: str, artifacts: Path, **kwargs) -> PlaybookResult:
    return playbook.run(PLAYBOOKS / name, "-i", str(INVENTORY), *args, artifacts_root=artifacts, **kwargs)


def cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The module's CLI as `make deploy` runs it, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "scripts.playbook", *args],
        cwd=ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=240,
        **kwargs,
    )


def test_a_passing_play_reports_stats_changes_and_durations(artifacts):
    result = run("pass.yml", artifacts=artifacts)
    assert (result.status, result.rc) == ("successful", 0), result.output
    assert result.recap == {
        HOST: {"ok": 4, "changed": 1, "unreachable": 0, "failed": 0, "skipped": 2, "rescued": 0, "ignored": 0}
    }
    assert [(task.task, task.status) for task in result.tasks] == [
        ("probe : Say which role this is", "ok"),
        ("Report nothing changed", "ok"),
        ("Report a change", "changed"),
        ("Be skipped", "skipped"),
        ("Take a while", "ok"),
        ("Leave the marker file", "skipped"),
    ]
    assert result.failures == [] and result.changed == 1
    # Durations are the callback's per-host timings: the half-second sleep took at least that long; slowest()
    # orders them.
    seconds = {task.task: task.seconds for task in result.tasks}
    assert seconds["Take a while"] >= 0.5 and all(value >= 0 for value in seconds.values())
    assert [task.seconds for task in result.slowest(6)] == sorted(seconds.values(), reverse=True)
    assert len(result.slowest(2)) == 2
    # ansible's own text is still there for messages, without the pty's \r.
    assert "TASK [Report a change] ***" in result.output and "\nchanged: [localhost]\n" in result.output
    assert "\r" not in result.output and "PLAY RECAP" in result.output

    # The record: exactly events + stats, named by the run's ident; stats.json agrees with the events.
    assert result.artifacts == artifacts / result.ident
    assert {path.name for path in result.artifacts.iterdir()} == RECORD
    lines = (result.artifacts / playbook.EVENTS_FILE).read_text().splitlines()
    assert [json.loads(line)["uuid"] for line in lines] == [event["uuid"] for event in result.events]
    stats = json.loads((result.artifacts / playbook.STATS_FILE).read_text())
    assert (stats["status"], stats["rc"], stats["recap"], stats["failures"]) == ("successful", 0, result.recap, [])
    loaded = PlaybookResult.load(result.artifacts)
    assert (loaded.recap, loaded.tasks, loaded.output) == (result.recap, result.tasks, result.output)


def test_a_failing_task_is_named_with_its_message(artifacts):
    result = run("fail.yml", artifacts=artifacts)
    assert (result.status, result.rc) == ("failed", 2)
    assert result.failures == [
        TaskResult(
            HOST,
            "Break here",
            "failed",
            result.failures[0].seconds,
            "the broken thing: its reason",
            "ansible.builtin.fail",
        )
    ]
    # An ignored failure is not a failure of the run; the task after the failure never ran.
    assert [(task.task, task.status) for task in result.tasks] == [
        ("Fail, but ignored", "ignored"),
        ("Break here", "failed"),
    ]
    assert result.recap[HOST]["failed"] == 1 and result.recap[HOST]["ignored"] == 1
    stats = json.loads((result.artifacts / playbook.STATS_FILE).read_text())
    assert [(f["task"], f["message"]) for f in stats["failures"]] == [("Break here", "the broken thing: its reason")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_host_is_reported_with_the_reason(artifacts, tmp_path):
    inventory = tmp_path / "unreachable.yml"
    host = {"ansible_host": "127.0.0.1", "ansible_port": free_port(), "ansible_user": "nobody"}
    inventory.write_text(json.dumps({"all": {"hosts": {"nowhere": host}}}))
    result = playbook.run(PLAYBOOKS / "pids.yml", "-i", str(inventory), artifacts_root=artifacts)
    assert (result.status, result.rc) == ("failed", 4)
    [failure] = result.failures
    assert (failure.host, failure.task, failure.status) == ("nowhere", "First module process", "unreachable")
    assert "refused" in failure.message.lower(), failure.message
    assert result.recap["nowhere"]["unreachable"] == 1


def test_a_syntax_error_fails_before_any_play_and_says_why(artifacts):
    result = run("syntax_error.yml", artifacts=artifacts)
    assert (result.status, result.rc) == ("failed", 4)
    assert result.recap == {} and result.tasks == [] and result.failures == []
    assert "conflicting action statements" in result.output
    assert json.loads((result.artifacts / playbook.STATS_FILE).read_text())["recap"] == {}


def test_progress_events_arrive_in_order_while_the_play_runs(artifacts, tmp_path):
    marker = tmp_path / "marker"
    seen: list[tuple[str, str | None, bool]] = []

    def on_event(event):
        data = event.get("event_data") or {}
        seen.append((event["event"], data.get("task"), marker.exists()))

    result = run("pass.yml", "-e", f"marker={marker}", artifacts=artifacts, on_event=on_event)
    assert result.rc == 0 and marker.exists()
    kinds = [kind for kind, _task, _marker in seen if kind not in ("verbose", "deprecated", "warning")]
    assert kinds[:2] == ["playbook_on_start", "playbook_on_play_start"] and kinds[-1] == "playbook_on_stats"
    task_events = [(kind, task) for kind, task, _ in seen if kind.startswith(("playbook_on_task", "runner_on_"))]
    order = [task for kind, task in task_events if kind == "playbook_on_task_start"]
    assert order == [
        "Say which role this is",
        "Report nothing changed",
        "Report a change",
        "Be skipped",
        "Take a while",
        "Leave the marker file",
    ]
    # Each task: started, then its result, before the next task starts.
    for name in order:
        start = task_events.index(("playbook_on_task_start", name))
        assert task_events[start + 1] == ("runner_on_start", name)
        assert task_events[start + 2][0] in ("runner_on_ok", "runner_on_skipped") and task_events[start + 2][1] == name
    # As they happen, not after the run: the "Take a while" result was reported before the last task wrote the
    # marker file.
    assert ("runner_on_ok", "Take a while", False) in seen
    assert [event["event"] for event in result.events] == [kind for kind, _, _ in seen]


def test_the_progress_printer_prints_plays_results_and_the_recap(artifacts):
    out = io.StringIO()
    result = run("fail.yml", artifacts=artifacts, on_event=playbook.ProgressPrinter(out))
    assert result.rc == 2
    lines = out.getvalue().splitlines()
    assert lines[0] == "PLAY [A failing play]"
    assert [line.split()[0] for line in lines[1:]] == ["ignored", "non-zero", "FAILED", "the", "RECAP"]
    assert lines[1].endswith(" s  [localhost] Fail, but ignored")
    assert lines[3].endswith(" s  [localhost] Break here") and lines[4].strip() == "the broken thing: its reason"
    assert lines[5] == "RECAP [localhost] ok=1 changed=0 unreachable=0 failed=1 skipped=0 rescued=0 ignored=1"


def module_pids(result: PlaybookResult) -> list[str]:
    return [e["event_data"]["res"]["stdout"] for e in result.events if e["event"] == "runner_on_ok"]


def test_no_task_gets_a_terminal_to_wait_on(artifacts):
    # ansible-runner runs ansible-playbook on a pty; anything asking on /dev/tty there (ssh about an unknown host
    # key) would wait for an answer nobody sees. Without a controlling terminal it fails at once, as in CI.
    result = run("terminal.yml", artifacts=artifacts)
    assert result.rc == 0, result.output
    assert [e["event_data"]["res"]["stdout"] for e in result.events if e["event"] == "runner_on_ok"] == ["none"]


def secret_env() -> tuple[str, dict[str, str]]:
    secret = "s3cret-" + secrets.token_hex(16)
    env = {
        **os.environ,
        "PLAYBOOK_TEST_SECRET": secret,
        "PLAYBOOK_TEST_MARKER": "visible",
    }
    return secret, env


def secret_args(secret: str) -> list[str]:
    return ["-e", f"secret_sha256={hashlib.sha256(secret.encode()).hexdigest()}", "-vvv"]


def test_a_secret_in_the_environment_never_reaches_a_file(artifacts, tmp_path):
    secret, env = secret_env()
    private = tmp_path / "private"
    result = run("secret.yml", *secret_args(secret), artifacts=artifacts, env=env, private_data_dir=private)
    assert result.rc == 0, result.output  # the asserts passed: the secret and the marker reached the play

    written = playbook.artifact_files(private, artifacts)
    names = {path.name for path in written}
    assert {"command", "stdout", "status", "rc"} <= names and any(p.parent.name == "job_events" for p in written)
    assert playbook.files_containing(secret, private, artifacts) == []
    assert secret not in result.output
    # ansible-runner records the run's environment in artifacts/<ident>/command: none of the caller's variables
    # is in it, not even harmless ones, and no env/ files were written.
    recorded = json.loads((private / "artifacts" / result.ident / "command").read_text())["env"]
    assert "PLAYBOOK_TEST_MARKER" not in recorded and "PATH" not in recorded
    assert recorded["ANSIBLE_CONFIG"] == str(ROOT / "ansible" / "ansible.cfg")
    assert not (private / "env").exists()


def test_a_secret_in_the_clis_own_environment_never_reaches_a_file(artifacts, tmp_path):
    # The Makefile's case: the secret is in the environment of the process that runs ansible-runner, which seeds
    # the run's recorded environment from it.
    secret, env = secret_env()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = cli("--artifacts", str(artifacts), str(PLAYBOOKS / "secret.yml"), "-i", str(INVENTORY), *secret_args(secret),
               env={**env, "TMPDIR": str(scratch)})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert secret not in done.stdout + done.stderr
    [record] = list(artifacts.iterdir())
    assert {path.name for path in record.iterdir()} == RECORD
    assert playbook.files_containing(secret, artifacts) == []
    # The private data dir and the FIFO were in the run's temporary directory, which is gone.
    assert list(scratch.iterdir()) == []


def test_ask_env_asks_only_for_what_is_not_set():
    asked = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "typed"

    env = playbook.with_asked_secrets({"A": "given", "B": ""}, ["A", "B", "C"], ask=ask, interactive=True)
    # A set variable is taken as it is, even empty (a passwordless sudo); only C is asked for.
    assert (env["A"], env["B"], env["C"], asked) == ("given", "", "typed", ["C: "])
    with pytest.raises(ValueError, match="C is not set and there is no terminal"):
        playbook.with_asked_secrets({}, ["C"], ask=ask, interactive=False)


def test_the_cli_asks_for_a_missing_secret_on_its_terminal_without_echoing_it(artifacts):
    # make setup's case: MAC_ADMIN_PASSWORD asked for on the operator's terminal, then in the run's environment only.
    import pexpect

    secret, env = secret_env()
    env.pop("PLAYBOOK_TEST_SECRET")
    argv = ["-m", "scripts.playbook", "--ask-env", "PLAYBOOK_TEST_SECRET", "--artifacts", str(artifacts)]
    argv += [str(PLAYBOOKS / "secret.yml"), "-i", str(INVENTORY), *secret_args(secret)]
    child = pexpect.spawn(sys.executable, argv, cwd=str(ROOT), env=env, encoding="utf-8", timeout=240)
    child.expect_exact("PLAYBOOK_TEST_SECRET: ")
    child.sendline(secret)
    rest = child.read()
    child.close()
    assert child.exitstatus == 0, rest[-3000:]  # the play's assert saw the typed secret
    assert secret not in rest
    assert playbook.files_containing(secret, artifacts) == []


def test_the_cli_without_a_terminal_refuses_a_missing_secret(artifacts):
    env = {k: v for k, v in os.environ.items() if k != "PLAYBOOK_TEST_SECRET"}
    done = cli("--ask-env", "PLAYBOOK_TEST_SECRET", "--artifacts", str(artifacts), "tests/runner/playbooks/pass.yml",
               "-i", str(INVENTORY), env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2
    assert "PLAYBOOK_TEST_SECRET is not set and there is no terminal to ask for it on" in done.stderr
    assert not artifacts.exists() or list(artifacts.iterdir()) == []  # refused before any run


def test_files_containing_finds_a_secret_written_plainly_or_json_escaped(tmp_path):
    secret = 'pa"ss\\word-' + secrets.token_hex(4)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "events.jsonl").write_text(json.dumps({"stdout": secret}) + "\n")
    (tmp_path / "plain.txt").write_text(f"x{secret}y")
    (tmp_path / "clean.txt").write_text("nothing here")
    expected = [tmp_path / "a" / "b" / "events.jsonl", tmp_path / "plain.txt"]
    assert playbook.files_containing(secret, tmp_path) == expected
    assert len(playbook.artifact_files(tmp_path)) == 3


def test_the_cli_passes_ansibles_exit_code_and_output_through(artifacts):
    done = cli("--artifacts", str(artifacts), "--ident", "cli-fail", "tests/runner/playbooks/fail.yml",
               "-i", "tests/runner/inventory.yml")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "TASK [Break here]" in done.stdout and "the broken thing: its reason" in done.stdout
    assert f"events and stats in {artifacts / 'cli-fail'}" in done.stderr
    assert json.loads((artifacts / "cli-fail" / playbook.STATS_FILE).read_text())["rc"] == 2

    progress = cli("--progress", "--artifacts", str(artifacts), "tests/runner/playbooks/pass.yml",
                   "-i", "tests/runner/inventory.yml")  # fmt: skip
    assert progress.returncode == 0, progress.stderr
    assert progress.stdout.splitlines()[0] == "PLAY [A passing play]"
    assert "changed" in progress.stdout and "[localhost] Report a change" in progress.stdout
    assert "TASK [" not in progress.stdout  # progress lines instead of ansible's text


def test_the_cli_refuses_a_bad_or_reused_ident_and_keeps_the_old_record(artifacts):
    bad = cli("--artifacts", str(artifacts), "--ident", "../escape", "tests/runner/playbooks/pass.yml")
    assert bad.returncode == 2 and "run ident '../escape'" in bad.stderr
    assert not artifacts.exists() or not any(artifacts.iterdir())

    first = cli("--artifacts", str(artifacts), "--ident", "once", "tests/runner/playbooks/pass.yml",
                "-i", "tests/runner/inventory.yml")  # fmt: skip
    assert first.returncode == 0, first.stderr
    kept = (artifacts / "once" / playbook.EVENTS_FILE).read_text()
    again = cli("--artifacts", str(artifacts), "--ident", "once", "tests/runner/playbooks/fail.yml",
                "-i", "tests/runner/inventory.yml")  # fmt: skip
    assert again.returncode == 2 and "once" in again.stderr
    assert (artifacts / "once" / playbook.EVENTS_FILE).read_text() == kept


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every process, from /proc (man 5 proc)."""
    table = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                cmdline = (stat_file.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                table[int(stat_file.parent.name)] = (int(fields[1]), fields[19], cmdline)
    return table


class ProcessTree:
    """The processes a test's run started, below `root`, seen while its task runs: what a SIGKILL or a cancel
    leaves behind (a killed ansible-playbook's task worker outlives it, as without ansible-runner) is ended
    afterwards, so that the tests leave nothing running on a shared machine."""

    def __init__(self, root: int) -> None:
        self.root, self.seen = root, {}

    def wait_for_task(self, command: str, timeout: float = 120) -> dict[int, tuple[int, str, str]]:
        def running():
            table, below, grew = process_table(), {self.root}, True
            while grew:
                more = {pid for pid, (ppid, _, _) in table.items() if ppid in below} - below
                below, grew = below | more, bool(more)
            now = {pid: table[pid] for pid in below - {self.root} if pid in table}
            self.seen.update(now)
            return any(command in cmdline for _, _, cmdline in now.values())

        wait_for(running, timeout, f"{command!r} below pid {self.root}")
        return self.seen

    def alive(self, pid: int) -> bool:
        table = process_table()  # one snapshot: the process may end between two reads
        return pid in table and table[pid][1] == self.seen[pid][1]

    def end_survivors(self) -> None:
        table = process_table()
        for pid, (_, started, _) in self.seen.items():
            if pid in table and table[pid][1] == started:  # the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_killing_the_cli_with_sigkill_ends_ansible_playbook(artifacts, tmp_path):
    # What test_06 of the e2e tier does to a deploy: SIGKILL the process it started, midway.
    secret, env = secret_env()
    ident = f"killed-{secrets.token_hex(4)}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.playbook", "--artifacts", str(artifacts), "--ident", ident,
         str(PLAYBOOKS / "sleep.yml"), "-i", str(INVENTORY)],
        cwd=ROOT, env={**env, "TMPDIR": str(tmp_path)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tree = ProcessTree(proc.pid)
    try:
        seen = tree.wait_for_task("sleep 120")
        [main] = [pid for pid, (ppid, _, cmdline) in seen.items() if ppid == proc.pid]
        assert "ansible-playbook" in seen[main][2]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        wait_for(lambda: not tree.alive(main), 30, "ansible-playbook to die with its parent")
    finally:
        if proc.poll() is None:
            proc.kill()
        tree.end_survivors()
    # The events up to the kill are kept; there is no stats.json for a run that never finished.
    events = [json.loads(line) for line in (artifacts / ident / playbook.EVENTS_FILE).read_text().splitlines()]
    assert "runner_on_start" in [event["event"] for event in events]
    assert not (artifacts / ident / playbook.STATS_FILE).exists()
    # Nothing could clean up after the SIGKILL: the run's temporary directory is left, without the secret.
    [left] = tmp_path.glob(f"playbook-{ident}-*")
    assert (left / "private" / "artifacts" / ident / "command").is_file()
    assert playbook.files_containing(secret, left, artifacts) == []


def test_a_timeout_or_a_cancel_ends_the_run(artifacts):
    tree = ProcessTree(os.getpid())  # ansible-runner starts ansible-playbook as a child of this process
    cancel = threading.Event()

    def watch(then=lambda: None):
        threading.Thread(target=lambda: (tree.wait_for_task("sleep 120", timeout=60), then()), daemon=True).start()

    try:
        watch()
        timed_out = run("sleep.yml", artifacts=artifacts, timeout=10)
        assert (timed_out.status, timed_out.rc) == ("timeout", 254)

        watch(then=cancel.set)
        canceled = run("sleep.yml", artifacts=artifacts, cancel=cancel)
        assert (canceled.status, canceled.rc) == ("canceled", 254)
        [main] = {e["pid"] for e in canceled.events if e["event"] == "runner_on_start"}
        assert main in tree.seen and not tree.alive(main)
    finally:
        tree.end_survivors()


def test_an_on_event_error_is_raised_after_the_run_which_completes(artifacts):
    def broken(event):
        raise KeyError("printer bug")

    with pytest.raises(RuntimeError, match="on_event failed") as raised:
        run("pass.yml", artifacts=artifacts, on_event=broken)
    assert isinstance(raised.value.__cause__, KeyError)
    [record] = list(artifacts.iterdir())
    assert json.loads((record / playbook.STATS_FILE).read_text())["status"] == "successful"
