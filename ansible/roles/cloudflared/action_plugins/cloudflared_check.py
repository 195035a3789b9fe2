"""Action `cloudflared_check`: the tunnel is ready, routes each environment's hostname to its port, and runs as a
service, in one task.

Why one action instead of a task per question: a run's time is mostly its number of task results (make
bench-deploy), and this check runs in every deploy and rollback. The module calls are the ones the tasks made
(ansible.builtin.uri for the metrics server's /ready, slurp for the config, launchctl / systemctl / pgrep through
ansible.builtin.command); the decisions are the functions below, unit-tested in tests/unit/test_checks.py. The
checks run in order and the first that fails ends the task with its reason. Reads only; never reports a change.

cloudflared's /ready: https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/monitor-tunnels/metrics/
Ingress rules (first match wins, the last must be a catch-all):
https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/configure-tunnels/local-management/configuration-file/
"""

from __future__ import annotations

import base64
from typing import Any

import yaml
from ansible.plugins.action import ActionBase


def ready_verdict(url: str, ready: dict[str, Any], min_connections: int) -> tuple[bool, str]:
    """ready: the uri module's result for GET <metrics>/ready (status 200 or 503; -1 or absent when no answer)."""
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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        self._vars = task_vars
        # Shown without -v, as assert shows its success_msg.
        result.update(changed=False, _ansible_verbose_always=True)
        said = []

        url = args["metrics_url"]
        ready = self._module(
            "ansible.builtin.uri", url=f"{url}/ready", status_code=[200, 503], timeout=int(args["timeout"])
        )
        ok, msg = ready_verdict(url, ready, int(args["min_connections"]))
        if not ok:
            return {**result, "failed": True, "msg": msg}
        said.append(msg)

        # A token-run tunnel's ingress lives in Cloudflare's dashboard: then config_paths is empty.
        for path in args["config_paths"]:
            config = self._module("ansible.builtin.slurp", src=path)
            if config.get("failed"):
                return {**result, "failed": True, "msg": f"Cannot read {path}: {config.get('msg', '')}"}
            else:
                routes = {
                    env: (args["environments"][env].get("hostname", ""), args["environments"][env]["port"])
                    for env in args["envs"]
                }
                try:
                    parsed = yaml.safe_load(base64.b64decode(config["content"]))
                except yaml.YAMLError as error:
                    return {**result, "failed": True, "msg": f"{path} is not valid YAML: {error}"}
                verdicts = ingress_verdicts(path, parsed if isinstance(parsed, dict) else {}, routes)
                failed = [m for good, m in verdicts if not good]
                if failed:
                    return {**result, "failed": True, "msg": "; ".join(failed)}
                said.extend(m for _, m in verdicts)
                break

        answers: dict[str, int] = {}
        label = args["launchd_label"]
        if args["system"] == "Darwin":
            answers["launchd"] = self._rc(["launchctl", "print", f"system/{label}"])
            if answers["launchd"] != 0:
                answers["launchd_agent"] = self._rc(["launchctl", "list", label])
        else:
            answers["systemd"] = 0 if self._stdout(["systemctl", "is-active", args["systemd_unit"]]) == "active" else 1
            if answers["systemd"] != 0:
                answers["process"] = self._rc(["pgrep", "-f", args["process_pattern"]])
        ok, msg = service_verdict(args["system"], answers, args)
        if not ok:
            return {**result, "failed": True, "msg": msg}
        said.append(msg)
        # One line per check: the callback prints a list item by item.
        return {**result, "failed": False, "msg": said}

    def _module(self, module: str, /, **module_args) -> dict:
        return self._execute_module(module, module_args=module_args, task_vars=self._vars)

    def _command(self, argv: list[str]) -> dict:
        return self._module("ansible.builtin.command", argv=argv)

    def _rc(self, argv: list[str]) -> int:
        return self._command(argv).get("rc", 1)

    def _stdout(self, argv: list[str]) -> str:
        return self._command(argv).get("stdout", "").strip()
