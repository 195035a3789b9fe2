"""What the access role set up, checked independently: keys only, the service account's keys, sudo for exactly the
named command (sudo and sshd themselves say so)."""

import os
import subprocess
from pathlib import Path

TESTBED = Path(os.environ["TESTBED_DIR"])


def test_sshd_takes_keys_only_with_the_drop_in():
    # The testbed's sshd keeps its files in the root-only testbed directory: read as root on the machine that runs it.
    assert (TESTBED / "ssh" / "sshd_config.d" / "000-local-llm-server.conf").is_file()
    # Its effective configuration (`sshd -T`): only the drop-in sets AuthenticationMethods, so this also shows that
    # the main config includes it.
    effective = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", f"{TESTBED}/ssh/sshd_config"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "authenticationmethods publickey" in effective
    assert "passwordauthentication no" in effective


def test_the_service_account_has_exactly_the_testbed_key(host):
    keys = host.file("/home/deploy/.ssh/authorized_keys").content_string.split("\n")
    wanted = (TESTBED / "ssh" / "id_ed25519.pub").read_text().split()[:2]
    assert [k.split()[:2] for k in keys if k.strip()] == [wanted]


def test_sudo_allows_the_service_account_exactly_the_named_command():
    listed = subprocess.run(["sudo", "-l", "-U", "deploy"], capture_output=True, text=True, check=True).stdout
    assert "(root) NOPASSWD: /usr/bin/id" in listed, listed
    assert "ALL : ALL" not in listed
