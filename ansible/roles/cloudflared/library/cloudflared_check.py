#!/usr/bin/python
"""Ansible module cloudflared_check: the tunnel is ready, routes each environment's hostname to its port, and runs as
a service.

It runs on the host, where cloudflared's metrics server listens on loopback, its config lives and its service is
loaded. The checks run in order and the first that fails ends the task with its reason; the decisions are the
functions below, unit-tested in tests/unit/test_checks.py. It runs under the host's own Python (on a Mac, Command
Line Tools' 3.9): the standard library, ansible's module_utils and PyYAML (set-up installs it there).

cloudflared's /ready: https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/monitor-tunnels/metrics/
Ingress rules (first match wins, the last must be a catch-all):
https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/configure-tunnels/local-management/configuration-file/
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.urls import fetch_url

try:
    import yaml
except ImportError:
    yaml = None
    YAML_IMPORT_ERROR = traceback.format_exc()

DOCUMENTATION = r"""
module: cloudflared_check
short_description: Check that cloudflared is ready, routes each environment and runs as a service
description:
  - Three checks, in order; the first that fails ends the task with its reason.
  - "Readiness: cloudflared's metrics server answers C(GET /ready) with 200 and at least I(min_connections) edge
    connections."
  - "Routes: the ingress of each file of I(config_paths) (a locally managed tunnel's config) sends the hostname of
    each of I(envs) to its loopback port (the first rule for that hostname decides) and ends with a catch-all rule."
  - "The service: on macOS launchd knows I(launchd_label) (C(launchctl print system/LABEL), else a user agent in
    C(launchctl list LABEL)); elsewhere systemd has I(systemd_unit) active, else a process matches
    I(process_pattern) (C(pgrep -f))."
  - Reads only; never reports a change. On success C(msg) lists one line per check.
options:
  metrics_url:
    description: cloudflared's metrics server (its config pins the address).
    type: str
    required: true
  min_connections:
    description: Edge connections C(/ready) must report.
    type: int
    required: true
  config_paths:
    description: The config files whose ingress is checked; empty for a tunnel run with a token, whose ingress lives
      in Cloudflare's dashboard.
    type: list
    elements: path
    default: []
  envs:
    description: The environments whose routes are checked.
    type: list
    elements: str
    required: true
  environments:
    description: The table of environments, each with its public C(hostname) and loopback C(port).
    type: dict
    required: true
  launchd_label:
    description: cloudflared's launchd label (macOS).
    type: str
    required: true
  systemd_unit:
    description: cloudflared's systemd unit (Linux), when there is one.
    type: str
    required: true
  process_pattern:
    description: C(pgrep -f) pattern of the cloudflared process when no systemd unit is active.
    type: str
    required: true
  timeout:
    description: Seconds for the metrics request.
    type: int
    required: true
  system:
    description: The host's system (C(ansible_system)); C(Darwin) asks launchd.
    type: str
    required: true
requirements:
  - PyYAML, when I(config_paths) is not empty.
notes:
  - Supports check mode (it only reads).
author: local-llm-server
"""

EXAMPLES = r"""
- name: Check that cloudflared is ready, routes each environment and runs as a service
  cloudflared_check:
    metrics_url: http://127.0.0.1:20241
    min_connections: 1
    config_paths: [/etc/cloudflared/config.yml]
    envs: [staging, production]
    environments:
      staging: {hostname: staging.llm.example.com, port: 8001}
      production: {hostname: llm.example.com, port: 8000}
    launchd_label: com.cloudflare.cloudflared
    systemd_unit: cloudflared.service
    process_pattern: "[c]loudflared"
    timeout: 10
    system: "{{ ansible_system }}"
"""

RETURN = r"""
msg:
  description: On success one line per check (readiness, each environment's route, the service); on failure the
    reason of the first check that failed.
  returned: always
  type: raw
  sample:
    - cloudflared ready with 4 edge connection(s).
    - "staging: staging.llm.example.com -> http://127.0.0.1:8001"
    - cloudflared loaded (launchd).
"""

ARGUMENT_SPEC: dict[str, Any] = {
    "metrics_url": {"type": "str", "required": True},
    "min_connections": {"type": "int", "required": True},
    "config_paths": {"type": "list", "elements": "path", "default": []},
    "envs": {"type": "list", "elements": "str", "required": True},
    "environments": {"type": "dict", "required": True},
    "launchd_label": {"type": "str", "required": True},
    "systemd_unit": {"type": "str", "required": True},
    "process_pattern": {"type": "str", "required": True},
    "timeout": {"type": "int", "required": True},
    "system": {"type": "str", "required": True},
}


def ready_verdict(url: str, ready: dict[str, Any], min_connections: int) -> tuple[bool, str]:
    """ready: GET <metrics>/ready's status (200 or 503; -1 or absent when no answer) and its JSON body."""
    status = ready.get("status", -1)
    connections = (ready.get("json") or {}).get("readyConnections")
    if status == 200 and int(connections or 0) >= min_connections:
        return True, f"cloudflared ready with {connections} edge connection(s)."
    return False, (
        f"cloudflared is not ready at {url}/ready (HTTP {status if status != -1 else 'no answer'}, "
        f"readyConnections={'?' if connections is None else connections}). Check `cloudflared tunnel info` and that "
        "its config pins `metrics: 127.0.0.1:20241`."
    )


def ingress_verdicts(
    config_file: str, config: dict[str, Any], routes: dict[str, tuple[str, int]]
) -> list[tuple[bool, str]]:
    """(ok, message) per environment; routes: env -> (public hostname, port)."""
    ingress = (config or {}).get("ingress") or []
    catch_all_last = bool(ingress) and "hostname" not in ingress[-1]
    verdicts = []
    for env, (hostname, port) in routes.items():
        wanted = [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]
        # cloudflared uses the first rule whose hostname matches (rules with a path are ignored here).
        services = [r.get("service", "") for r in ingress if r.get("hostname") == hostname and "path" not in r]
        if hostname and services and services[0].rstrip("/") in wanted and catch_all_last:
            verdicts.append((True, f"{env}: {hostname} -> {services[0]}"))
        else:
            verdicts.append(
                (
                    False,
                    (
                        f"{config_file}: ingress must route '{hostname}' ({env}) to one of {' / '.join(wanted)} (first "
                        f"matching rule: {services[0] if services else 'none'}), and the last rule must be a catch-all."
                    ),
                )
            )
    return verdicts


def service_verdict(system: str, answers: dict[str, int], settings: dict[str, str]) -> tuple[bool, str]:
    """answers: exit codes of the service probes that ran (launchd, launchd_agent, systemd, process)."""
    if answers.get("launchd") == 0 or answers.get("launchd_agent") == 0:
        return True, "cloudflared loaded (launchd)."
    if answers.get("systemd") == 0:
        return True, "cloudflared loaded (systemd)."
    if answers.get("process") == 0:
        return True, "cloudflared loaded (process)."
    if system == "Darwin":
        reason = (
            f"launchd label {settings['launchd_label']} not found (`make setup` installs its daemon, which starts at "
            "boot)"
        )
    else:
        reason = f"neither {settings['systemd_unit']} is active nor a process matches {settings['process_pattern']}"
    return False, f"cloudflared is not loaded as a service: {reason}."


def ask_ready(module: AnsibleModule, url: str) -> dict[str, Any]:
    """GET <url>/ready: {status, json}; the body of a 503 says how many connections there are, too."""
    response, info = fetch_url(module, f"{url}/ready", timeout=module.params["timeout"])
    # fetch_url reads an error status's body itself and keeps it in info.
    body = response.read() if info["status"] == 200 else info.get("body") or b""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    return {"status": info["status"], "json": parsed if isinstance(parsed, dict) else None}


def read_config(module: AnsibleModule, path: str) -> dict[str, Any]:
    """The config file's YAML as a mapping ({} when it is not one); fails the task when it cannot be read."""
    if yaml is None:
        module.fail_json(
            msg=f"{missing_required_lib('PyYAML', reason=f'to read {path}')}. On a Mac, `make setup` installs it.",
            exception=YAML_IMPORT_ERROR,
        )
    try:
        with open(path, encoding="utf-8") as handle:
            parsed = yaml.safe_load(handle)
    except OSError as error:
        module.fail_json(msg=f"Cannot read {path}: {error}")
    except yaml.YAMLError as error:
        module.fail_json(msg=f"{path} is not valid YAML: {error}")
    return parsed if isinstance(parsed, dict) else {}


def exit_code(module: AnsibleModule, argv: list[str]) -> int:
    """argv's exit code; 127, as a shell says, when its command is not installed (no systemctl on the host)."""
    executable = module.get_bin_path(argv[0])
    if executable is None:
        return 127
    rc, _, _ = module.run_command([executable, *argv[1:]])
    return rc


def service_answers(module: AnsibleModule) -> dict[str, int]:
    """The service probes for this system, each asked only while the ones before it said no."""
    params = module.params
    label = params["launchd_label"]
    answers: dict[str, int] = {}
    if params["system"] == "Darwin":
        answers["launchd"] = exit_code(module, ["launchctl", "print", f"system/{label}"])
        if answers["launchd"] != 0:
            answers["launchd_agent"] = exit_code(module, ["launchctl", "list", label])
    else:
        answers["systemd"] = exit_code(module, ["systemctl", "is-active", "--quiet", params["systemd_unit"]])
        if answers["systemd"] != 0:
            answers["process"] = exit_code(module, ["pgrep", "-f", params["process_pattern"]])
    return answers


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    said = []

    url = params["metrics_url"]
    ok, msg = ready_verdict(url, ask_ready(module, url), params["min_connections"])
    if not ok:
        module.fail_json(msg=msg)
    said.append(msg)

    routes = {
        env: (params["environments"][env].get("hostname", ""), params["environments"][env]["port"])
        for env in params["envs"]
    }
    for path in params["config_paths"]:
        verdicts = ingress_verdicts(path, read_config(module, path), routes)
        failed = [message for good, message in verdicts if not good]
        if failed:
            module.fail_json(msg="; ".join(failed))
        said.extend(message for _, message in verdicts)

    ok, msg = service_verdict(params["system"], service_answers(module), params)
    if not ok:
        module.fail_json(msg=msg)
    said.append(msg)
    # One line per check: the callback prints a list item by item.
    module.exit_json(changed=False, msg=said)


if __name__ == "__main__":
    main()
