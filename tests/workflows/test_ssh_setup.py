"""`make ssh-setup`, the step the deploy workflows run before ansible-playbook, with real keys."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def keypair(tmp_path: Path, name: str) -> tuple[str, str]:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text(), (tmp_path / f"{name}.pub").read_text().strip()


def ssh_setup(ssh_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOY_")}
    full_env.update(env, SSH_DIR=str(ssh_dir))
    return subprocess.run(
        ["make", "--no-print-directory", "ssh-setup"], cwd=ROOT, env=full_env, capture_output=True, text=True
    )


@pytest.fixture
def keys(tmp_path):
    client_key, _ = keypair(tmp_path, "client")
    _, host_pub = keypair(tmp_path, "host")
    return client_key, "mac-mini.example.ts.net " + " ".join(host_pub.split()[:2])


def test_writes_key_and_pinned_host_line(tmp_path, keys):
    client_key, known = keys
    ssh_dir = tmp_path / "ssh"
    result = ssh_setup(ssh_dir, DEPLOY_SSH_KEY=client_key, DEPLOY_KNOWN_HOSTS=known)
    assert result.returncode == 0, result.stderr
    key_file = ssh_dir / "id_ed25519"
    assert key_file.read_text().strip() == client_key.strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert (ssh_dir / "known_hosts").read_text().strip() == known
    assert "PRIVATE KEY" not in result.stdout + result.stderr


def test_missing_known_hosts_is_refused(tmp_path, keys):
    client_key, _ = keys
    result = ssh_setup(tmp_path / "ssh", DEPLOY_SSH_KEY=client_key, DEPLOY_KNOWN_HOSTS="")
    assert result.returncode != 0
    assert "DEPLOY_KNOWN_HOSTS is empty" in result.stderr


def test_garbage_key_is_refused_without_echoing_it(tmp_path, keys):
    _, known = keys
    secret = "not-a-key-but-still-secret-4711"
    result = ssh_setup(tmp_path / "ssh", DEPLOY_SSH_KEY=secret, DEPLOY_KNOWN_HOSTS=known)
    assert result.returncode != 0
    assert "not a readable" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_malformed_host_line_is_refused(tmp_path, keys):
    client_key, _ = keys
    result = ssh_setup(
        tmp_path / "ssh", DEPLOY_SSH_KEY=client_key, DEPLOY_KNOWN_HOSTS="mac-mini ssh-ed25519 AAAAnotbase64!!"
    )
    assert result.returncode != 0
    assert "not a valid public host key" in result.stderr
