"""Every role declares its inputs (meta/argument_specs.yml), and Ansible refuses a bad one before the role does
anything, with a message naming the role and the input.

One real ansible-playbook run on localhost: each role is included with one bad input inside a block whose rescue
records the failure, so the run reports every refusal at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "ansible" / "roles"

# role (entry point) -> one bad input, and what Ansible's refusal must say.
BAD_INPUTS = {
    ("release", "main"): ({"app_env": "staging", "release_gate_timeout": "soon"}, "release_gate_timeout"),
    ("release", "status"): ({"release_status_fail": "sometimes"}, "release_status_fail"),
    ("access", "main"): ({"access_tailscale": "perhaps"}, "access_tailscale"),
    ("ollama", "main"): ({"ollama_kv_cache_type": "q2_k"}, "ollama_kv_cache_type"),
    ("cloudflared", "main"): ({"app_environments": "staging"}, "app_environments"),
    ("docker_runtime", "check"): ({"docker_runtime_min_free_gib": "lots"}, "docker_runtime_min_free_gib"),
    ("ollama", "check"): ({"ollama_pull": "maybe"}, "ollama_pull"),
    ("cloudflared", "check"): ({"cloudflared_min_connections": "many"}, "cloudflared_min_connections"),
}


def test_every_role_declares_its_inputs_and_each_default_is_one():
    for role in sorted(p.name for p in ROLES.iterdir() if p.is_dir()):
        specs = ROLES / role / "meta" / "argument_specs.yml"
        assert specs.is_file(), f"{role} has no meta/argument_specs.yml"
        declared = {
            name
            for entry in yaml.safe_load(specs.read_text())["argument_specs"].values()
            for name in entry.get("options", {})
        }
        defaults = ROLES / role / "defaults" / "main.yml"
        names = set(yaml.safe_load(defaults.read_text()) or {}) if defaults.exists() else set()
        assert names <= declared, f"{role}: defaults not declared in argument_specs: {sorted(names - declared)}"
        for entry, spec in yaml.safe_load(specs.read_text())["argument_specs"].items():
            undocumented = [n for n, o in spec.get("options", {}).items() if not o.get("description")]
            assert not undocumented, f"{role}/{entry}: inputs without a description: {undocumented}"


def test_the_roles_refuse_a_bad_input_with_their_own_message(tmp_path):
    out = tmp_path / "refusals.json"
    tasks = []
    for (role, entry), (bad, _) in BAD_INPUTS.items():
        tasks.append(
            {
                "name": f"{role}/{entry} refuses a bad input",
                "block": [
                    {
                        "ansible.builtin.include_role": {"name": role, "tasks_from": entry},
                        "vars": bad,
                    },
                    {"ansible.builtin.set_fact": {"accepted": "{{ accepted + ['" + f"{role}/{entry}" + "'] }}"}},
                ],
                "rescue": [
                    {
                        "ansible.builtin.set_fact": {
                            "refusals": "{{ refusals | combine({'"
                            + f"{role}/{entry}"
                            + "': ansible_failed_result.msg}) }}"
                        }
                    }
                ],
            }
        )
    tasks.append(
        {
            "ansible.builtin.copy": {
                "dest": str(out),
                "content": "{{ {'refused': refusals, 'accepted': accepted} | to_json }}",
                "mode": "0600",
            }
        }
    )
    play = [
        {
            "name": "Bad inputs",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": True,
            "gather_subset": ["min"],
            "vars": {
                "refusals": {},
                "accepted": [],
                "image_repository": "registry.example/llm",
                "image_tag": "sha-0000000",
                "ansible_python_interpreter": sys.executable,
            },
            "tasks": tasks,
        }
    ]
    playbook = tmp_path / "bad_inputs.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
    }
    ansible_playbook = Path(sys.executable).with_name("ansible-playbook")
    result = subprocess.run(
        [str(ansible_playbook), "-i", "localhost,", str(playbook)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["accepted"] == [], f"roles that ran with a bad input: {report['accepted']}"
    for (role, entry), (_bad, expected) in BAD_INPUTS.items():
        message = report["refused"].get(f"{role}/{entry}", "")
        assert "Validation of arguments failed" in message and expected in message, f"{role}/{entry}: {message!r}"


@pytest.mark.parametrize(("role", "entry"), sorted(BAD_INPUTS))
def test_each_bad_input_case_names_a_declared_input(role, entry):
    bad, expected = BAD_INPUTS[(role, entry)]
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    declared = set(specs[entry].get("options", {}))
    assert set(bad) <= declared | {"app_env"}, role
