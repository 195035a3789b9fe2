"""What `make setup` writes on a Mac, rendered by Ansible from the roles' own templates, defaults and vars with each
inventory's settings, then read back by what reads it there: plistlib for the launchd plists (as launchd parses
them), the cloudflared check's own parser for the ingress, the real `sshd -t` and `visudo -c` for the drop-ins.

launchd and Homebrew cannot run here; they run in .github/workflows/setup-macos.yml on GitHub's macOS runners.
"""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.role_plugins import role_plugin

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "ansible" / "roles"
TABLE = yaml.safe_load((ROOT / "environments.yml").read_text())
cloudflared_check = role_plugin("cloudflared/library/cloudflared_check.py")

# What each template is rendered from: the roles' defaults, then the inventory's settings, then the roles' vars (the
# precedence Ansible gives them in a play).
DEFAULTS = [ROLES / r / "defaults" / "main.yml" for r in ("app", "access", "ollama", "cloudflared")]
VARS = [ROLES / r / "vars" / "main.yml" for r in ("ollama", "cloudflared")]
TEMPLATES = {
    "ollama.plist": ROLES / "ollama" / "templates" / "ollama.plist.j2",
    "cloudflared.plist": ROLES / "cloudflared" / "templates" / "cloudflared.plist.j2",
    "config.yml": ROLES / "cloudflared" / "templates" / "config.yml.j2",
    "sshd.conf": ROLES / "access" / "templates" / "sshd.conf.j2",
    "sudoers": ROLES / "access" / "templates" / "sudoers.j2",
}


def render(tmp_path: Path, inventory: str, **extra) -> dict[str, str]:
    """Each template as Ansible renders it on a Mac (ansible_system Darwin) with inventories/<inventory>."""
    out = tmp_path / inventory
    out.mkdir()
    play = [
        {
            "name": "Render the set-up templates",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars_files": [
                *map(str, DEFAULTS),
                str(ROOT / "inventories" / inventory / "group_vars" / "mac_minis.yml"),
                *map(str, VARS),
            ],
            "tasks": [
                {
                    "name": f"Render {name}",
                    "ansible.builtin.template": {"src": str(src), "dest": str(out / name), "mode": "0644"},
                }
                for name, src in TEMPLATES.items()
            ],
        }
    ]
    playbook = tmp_path / f"render-{inventory}.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    # The app role's lookup plugin reads environments.yml; outside the role the same table is passed in.
    extra_vars = {
        "ansible_system": "Darwin",
        "ansible_python_interpreter": sys.executable,
        "app_environments": TABLE["environments"],
        "app_colors": TABLE["colors"],
        "testbed_dir": str(tmp_path),
        **extra,
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"), "ANSIBLE_STRATEGY": "linear"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", str(playbook)]
        + ["-e", json.dumps(extra_vars)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {name: (out / name).read_text() for name in TEMPLATES}


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict[str, str]:
    return render(tmp_path_factory.mktemp("production"), "production")


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, str]:
    """inventories/local: the testbed's settings (Ollama's and a locally managed tunnel's)."""
    return render(tmp_path_factory.mktemp("local"), "local")


def test_ollama_runs_with_the_inventorys_settings_under_its_own_label(production):
    plist = plistlib.loads(production["ollama.plist"].encode())
    assert plist["Label"] == "com.local-llm-server.ollama"  # not Homebrew's homebrew.mxcl.ollama
    assert plist["ProgramArguments"] == ["/opt/homebrew/opt/ollama/bin/ollama", "serve"]
    assert plist["UserName"] == "deploy"
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    group_vars = yaml.safe_load((ROOT / "inventories/production/group_vars/mac_minis.yml").read_text())
    assert plist["EnvironmentVariables"] == {
        "HOME": "/Users/deploy",
        "OLLAMA_HOST": "127.0.0.1:11434",
        "OLLAMA_NUM_PARALLEL": str(group_vars["app_ollama_slots"]),
        "OLLAMA_KEEP_ALIVE": group_vars["ollama_keep_alive"],
        "OLLAMA_FLASH_ATTENTION": group_vars["ollama_flash_attention"],
        "OLLAMA_KV_CACHE_TYPE": group_vars["ollama_kv_cache_type"],
    }


def test_an_unset_ollama_setting_is_left_out_so_ollamas_default_holds(local):
    environment = plistlib.loads(local["ollama.plist"].encode())["EnvironmentVariables"]
    assert set(environment) == {"HOME", "OLLAMA_HOST", "OLLAMA_NUM_PARALLEL"}


def test_a_locally_managed_tunnel_routes_every_environment_and_ends_with_the_catch_all(local):
    config = yaml.safe_load(local["config.yml"])
    assert config["metrics"] == "127.0.0.1:20241"
    assert config["credentials-file"].endswith(f"/{config['tunnel']}.json")
    routes = {env: (e["hostname"], e["port"]) for env, e in TABLE["environments"].items()}
    # Read back by the check deploys and verify run, as it reads the file on the Mac.
    verdicts = cloudflared_check.ingress_verdicts("config.yml", config, routes)
    assert [ok for ok, _ in verdicts] == [True] * len(routes), verdicts
    assert config["ingress"][-1] == {"service": "http_status:404"}


def test_a_token_run_tunnel_has_no_local_ingress_and_runs_with_its_token_file(production):
    config = yaml.safe_load(production["config.yml"])
    assert config == {"metrics": "127.0.0.1:20241"}
    plist = plistlib.loads(production["cloudflared.plist"].encode())
    assert plist["Label"] == "com.cloudflare.cloudflared"
    arguments = plist["ProgramArguments"]
    assert arguments[:5] == [
        "/opt/homebrew/bin/cloudflared",
        "tunnel",
        "--config",
        "/etc/cloudflared/config.yml",
        "run",
    ]
    assert arguments[5:] == ["--token-file", "/etc/cloudflared/token"]


def test_a_locally_managed_tunnels_daemon_takes_the_tunnel_from_its_config(local):
    arguments = plistlib.loads(local["cloudflared.plist"].encode())["ProgramArguments"]
    assert arguments[-1] == "run" and "--token-file" not in arguments
