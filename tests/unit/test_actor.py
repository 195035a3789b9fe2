"""Who a release record and a lock name (the app role's app_actor), as a real ansible-playbook run on the controller
works it out: GITHUB_ACTOR in CI, else the controller's user and host, even where USER is not set."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def actor(tmp_path: Path, **env: str) -> str:
    out = tmp_path / "actor"
    play = [
        {
            "name": "Say who deploys",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": True,
            "gather_subset": ["min"],
            "vars": {"ansible_python_interpreter": sys.executable, "image_repository": "registry.example/llm"},
            "roles": ["app"],
            "tasks": [{"ansible.builtin.copy": {"content": "{{ app_actor }}", "dest": str(out), "mode": "0600"}}],
        }
    ]
    playbook = tmp_path / "actor.yml"
    playbook.write_text(yaml.safe_dump(play))
    base = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTOR", "USER", "LOGNAME")}
    run_env = {**base, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"), "ANSIBLE_STRATEGY": "linear", **env}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", str(playbook)],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out.read_text()


def test_ci_names_the_github_actor(tmp_path):
    assert actor(tmp_path, GITHUB_ACTOR="octocat") == "octocat"


@pytest.mark.parametrize("user", [None, "someone-else"])
def test_by_hand_the_controllers_user_and_host_even_without_user(tmp_path, user):
    # USER is not what is asked: a run under cron or in a container has none, and it can be anything.
    env = {"USER": user} if user else {}
    assert actor(tmp_path, **env) == f"{getpass.getuser()}@{socket.gethostname()}"
