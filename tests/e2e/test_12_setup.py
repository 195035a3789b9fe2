"""make setup on the testbed: ansible/setup.yml connects as the "Mac"'s admin account (llm-admin, sudo with its
password, as on a Mac) and brings a bare host to one that verify passes and a deploy works on, then changes nothing
on a second run. What only macOS runs (Homebrew, launchd) runs in .github/workflows/setup-macos.yml instead.

The bare host this file starts from: no sshd drop-in, a stray key in the deploy account's authorized_keys, no
cloudflared config or credentials, and an Ollama (the double) with another model than the configured one.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e import harness
from tests.e2e.conftest import in_the_registry
from tests.e2e.harness import TESTBED, flat
from tests.role_plugins import role_plugin

DROP_IN = TESTBED / "ssh" / "sshd_config.d" / "000-local-llm-server.conf"
DEPLOY_KEYS = Path("/home/deploy/.ssh/authorized_keys")
CLOUDFLARED_DIR = Path("/home/deploy/.cloudflared")
# A model Ollama has that the inventory does not name: set-up leaves it alone.
OTHER_MODEL = "qwen2.5:0.5b"
STRAY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHN0cmF5a2V5c3RyYXlrZXlzdHJheWtleXN0cmF5a2V5 stray@nowhere"


def setup_env(ansible: harness.Ansible, testbed: dict[str, str], **overrides: str) -> dict[str, str]:
    """make setup's environment: the admin account's sudo password and the tunnel's credentials, never on a
    command line."""
    return {
        **ansible.base_env,
        "MAC_ADMIN_PASSWORD": Path(testbed["ADMIN_PASSWORD_FILE"]).read_text().strip(),
        "CLOUDFLARED_TUNNEL_CREDENTIALS": Path(testbed["CLOUDFLARED_CREDENTIALS_FILE"]).read_text(),
        **overrides,
    }


@pytest.fixture(scope="module")
def bare_host(testbed):
    DROP_IN.unlink(missing_ok=True)
    subprocess.run(["pkill", "-HUP", "--pidfile", str(TESTBED / "run" / "sshd.pid")], check=True)
    DEPLOY_KEYS.write_text(DEPLOY_KEYS.read_text() + STRAY_KEY + "\n")
    subprocess.run(["rm", "-rf", str(CLOUDFLARED_DIR)], check=True)
    harness.double(testbed, "config", {"models": [OTHER_MODEL]})
    yield testbed
    harness.double(testbed, "reset")
    harness.testbed_up()  # the testbed's own cloudflared config and keys again, for the files after this one


@pytest.fixture(scope="module")
def first_setup(bare_host) -> harness.PlaybookRun:
    ansible = harness.Ansible(bare_host)
    return ansible.run("setup.yml", env=setup_env(ansible, bare_host))


def test_setup_converges_a_bare_host(first_setup, testbed):
    assert first_setup.returncode == 0, first_setup.output[-4000:]
    assert first_setup.changed > 0
    # Ollama: the missing model pulled through its API, then loaded (the FAQ's preload: the model and no prompt).
    assert [r["body"]["model"] for r in harness.double_requests(testbed, "/api/pull")] == ["llama3.2:1b"]
    assert {"model": "llama3.2:1b"} in [r["body"] for r in harness.double_requests(testbed, "/api/generate")]
    status, tags = harness.http_get(f"{testbed['OLLAMA_HOST_URL']}/api/tags")
    assert status == 200 and {m["name"] for m in json.loads(tags)["models"]} == {OTHER_MODEL, "llama3.2:1b"}
    assert harness.double_requests(testbed, "/api/delete") == []


def test_sshd_takes_keys_only_and_the_deploy_account_has_exactly_its_keys(first_setup, testbed):
    assert first_setup.returncode == 0
    effective = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", str(TESTBED / "ssh" / "sshd_config")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "authenticationmethods publickey" in effective  # only the drop-in sets it
    keys = [line.split()[:2] for line in DEPLOY_KEYS.read_text().splitlines() if line.strip()]
    assert keys == [Path(testbed["SSH_KEY"] + ".pub").read_text().split()[:2]]  # the stray key is gone
    # The reloaded sshd still lets the deploy account in with its key (a deploy below logs in the same way).
    login = subprocess.run(
        ["ssh", "-p", "2222", "-i", testbed["SSH_KEY"], "-o", f"UserKnownHostsFile={testbed['SSH_KNOWN_HOSTS']}"]
        + ["-o", "BatchMode=yes", "deploy@127.0.0.1", "true"],
        capture_output=True,
        text=True,
    )
    assert login.returncode == 0, login.stderr
    # No sudo for deploys: nothing on the deploy path needs root.
    listed = subprocess.run(["sudo", "-l", "-U", "deploy"], capture_output=True, text=True).stdout
    assert "is not allowed to run sudo" in listed, listed


def test_cloudflared_config_and_secret_are_written_and_the_secret_never_shown(first_setup, testbed):
    assert first_setup.returncode == 0
    config = yaml.safe_load((CLOUDFLARED_DIR / "config.yml").read_text())
    environments = {env: (e["hostname"], e["port"]) for env, e in harness.ENVIRONMENTS.items()}
    # Read back by the cloudflared check's own parser.
    verdicts = role_plugin("cloudflared/library/cloudflared_check.py").ingress_verdicts("c", config, environments)
    assert all(ok for ok, _ in verdicts), verdicts
    credentials = Path(config["credentials-file"])
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    secret = json.loads(credentials.read_text())["TunnelSecret"]
    assert secret == json.loads(Path(testbed["CLOUDFLARED_CREDENTIALS_FILE"]).read_text())["TunnelSecret"]
    artifacts = first_setup.result.artifacts
    assert secret not in first_setup.output
    assert all(secret not in path.read_text() for path in artifacts.rglob("*") if path.is_file())


def test_a_second_setup_changes_nothing(first_setup, testbed):
    assert first_setup.returncode == 0
    ansible = harness.Ansible(testbed)
    again = ansible.run("setup.yml", env=setup_env(ansible, testbed))
    assert again.returncode == 0, again.output[-4000:]
    assert again.changed == 0, [t.task for t in again.result.tasks if t.status == "changed"]


def test_after_setup_a_deploy_works_and_verify_passes(first_setup, testbed, built_images):
    assert first_setup.returncode == 0
    ansible = harness.Ansible(testbed)
    harness.ensure_serving(ansible, in_the_registry(testbed, built_images).first)
    # Each stack sends Ollama at most its share of the slots (the app role's defaults: production 2, staging 1).
    app_defaults = yaml.safe_load((harness.ROOT / "ansible/roles/app/defaults/main.yml").read_text())
    shares = app_defaults["app_ollama_slot_shares"]
    for env, share in shares.items():
        assert f"\nMAX_CONCURRENT={share}\n" in (harness.DEPLOY_HOME / env / f".env.{env}").read_text()
    result = ansible.run("verify.yml")
    assert result.returncode == 0, result.output[-4000:]
    # The ingress verify checked is the one set-up wrote (127.0.0.1, where the testbed's own config says localhost).
    assert "staging.llm.example.com -> http://127.0.0.1:8001" in flat(result.output)


def test_shares_that_do_not_fit_are_refused_before_anything_changes(first_setup, testbed):
    assert first_setup.returncode == 0
    ansible = harness.Ansible(testbed)
    shares = json.dumps({"app_ollama_slot_shares": {"production": 3, "staging": 2}})
    refused = ansible.run("setup.yml", "-e", shares, env=setup_env(ansible, testbed))
    assert refused.returncode != 0
    assert "5 in all" in flat(refused.output) and "3 slots" in flat(refused.output), refused.output[-3000:]
    assert refused.changed == 0


def test_an_empty_key_list_is_refused_before_it_locks_deploys_out(first_setup, testbed):
    assert first_setup.returncode == 0
    ansible = harness.Ansible(testbed)
    keys_before = DEPLOY_KEYS.read_text()
    no_keys = json.dumps({"access_authorized_keys": []})
    refused = ansible.run("setup.yml", "-e", no_keys, env=setup_env(ansible, testbed))
    assert refused.returncode != 0
    assert "access_authorized_keys is empty" in flat(refused.output), refused.output[-3000:]
    assert refused.changed == 0 and DEPLOY_KEYS.read_text() == keys_before


def test_a_wrong_admin_password_is_refused_and_not_shown(first_setup, testbed):
    assert first_setup.returncode == 0
    ansible = harness.Ansible(testbed)
    wrong = "not-the-password-4f1c"
    refused = ansible.run("setup.yml", env=setup_env(ansible, testbed, MAC_ADMIN_PASSWORD=wrong))
    assert refused.returncode != 0
    # Ansible says "Incorrect sudo password" (other connection plugins word it "sudo password is incorrect").
    said = flat(refused.output).lower()
    assert "sudo password" in said and "incorrect" in said, refused.output[-3000:]
    assert wrong not in refused.output
