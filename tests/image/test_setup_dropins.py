"""The access role's drop-ins, rendered by Ansible from the role's templates with the inventories' settings
(tests/unit/test_setup_templates.py's render) and checked by the real programs that read them on a Mac: `sshd -T`
and `visudo -c`. In the image tier because the testbed installs them (openssh-server, sudo)."""

from __future__ import annotations

import subprocess

import pytest

from tests.unit.test_setup_templates import render


@pytest.fixture(scope="module")
def testbed_templates(testbed, tmp_path_factory) -> dict[str, str]:
    return render(tmp_path_factory.mktemp("local"), "local", access_sudo_commands=["/usr/bin/id", "/bin/true"])


def test_sshd_accepts_the_drop_in_and_it_takes_keys_only(testbed_templates, tmp_path):
    dropin = tmp_path / "000-local-llm-server.conf"
    dropin.write_text(testbed_templates["sshd.conf"])
    effective = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(dropin)], capture_output=True, text=True, check=True)
    lines = effective.stdout.splitlines()
    assert {"passwordauthentication no", "kbdinteractiveauthentication no", "authenticationmethods publickey"} <= set(
        lines
    )


def test_visudo_accepts_the_sudoers_drop_in_naming_exactly_the_commands(testbed_templates, tmp_path):
    sudoers = tmp_path / "sudoers"
    sudoers.write_text(testbed_templates["sudoers"])
    subprocess.run(["visudo", "-cqf", str(sudoers)], check=True)
    assert testbed_templates["sudoers"].splitlines()[-1] == "deploy ALL=(root) NOPASSWD: /usr/bin/id, /bin/true"


def test_visudo_refuses_a_command_without_its_full_path(testbed, tmp_path):
    sudoers = render(tmp_path, "staging", access_sudo_commands=["id"])["sudoers"]
    (tmp_path / "bad").write_text(sudoers)
    assert subprocess.run(["visudo", "-cqf", str(tmp_path / "bad")], capture_output=True).returncode != 0
