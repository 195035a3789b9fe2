"""Action `docker_runtime_check`: the host's Docker engine, Compose plugin and free disk, checked in one task.

Why one action instead of a task per question: a run's time is mostly its number of task results (make
bench-deploy), and these checks run in every deploy and rollback. The three module calls are the ones the tasks
made (community.docker.docker_host_info, `docker compose version --short`, `df -Pk`); the verdict is
`host_verdict` below, unit-tested in tests/unit/test_checks.py. Reads only; never reports a change.
"""

from __future__ import annotations

from typing import Any

from ansible.module_utils.compat.version import LooseVersion
from ansible.plugins.action import ActionBase

# Compose's healthcheck start_interval needs Docker Engine >= 25
# (https://docs.docker.com/reference/compose-file/services/#healthcheck).
START_INTERVAL_MIN_DOCKER = "25.0"


def _at_least(version: str, minimum: str) -> bool:
    try:
        return LooseVersion(version) >= LooseVersion(minimum)
    except TypeError:
        return False


def free_gib(df_stdout: str) -> float:
    """`df -Pk PATH`: the last line's fourth column is the available 1K blocks (POSIX format, macOS too)."""
    return round(int(df_stdout.strip().splitlines()[-1].split()[3]) / 1048576, 1)


def host_verdict(facts: dict[str, Any], settings: dict[str, Any]) -> tuple[bool, str]:
    """(ok, message) from what the host answered.

    facts: docker_error (str, empty when the engine answered), docker_version, compose_rc, compose_stdout,
    compose_stderr, free_gib, system, distribution, distribution_version.
    settings: docker_host, min_docker_version, min_compose_version, min_free_gib, disk_path, start_interval, host.
    """
    if facts["docker_error"]:
        return False, (
            f"The Docker engine at {settings['docker_host']} does not answer: {facts['docker_error']}. "
            "On a Mac: is Docker Desktop running (it starts only after a user logs in), and is app_docker_host right "
            '(unix:///var/run/docker.sock needs "Allow the default Docker socket"; else '
            "unix://$HOME/.docker/run/docker.sock)?"
        )
    docker = facts["docker_version"]
    compose_ok = facts["compose_rc"] == 0
    compose = facts["compose_stdout"].strip().removeprefix("v") if compose_ok else ""
    start_interval_refused = bool(settings["start_interval"]) and not _at_least(docker, START_INTERVAL_MIN_DOCKER)
    ok = (
        _at_least(docker, settings["min_docker_version"])
        and compose_ok
        and _at_least(compose, settings["min_compose_version"])
        and facts["free_gib"] >= float(settings["min_free_gib"])
        and not start_interval_refused
    )
    disk = f"{facts['free_gib']} GiB under {settings['disk_path']}"
    if ok:
        system = " ".join(p for p in (facts["system"], facts["distribution"], facts["distribution_version"]) if p)
        return True, (
            f"{settings['host']}: {system}, Docker {docker} at {settings['docker_host']}, Compose {compose}, "
            f"{facts['free_gib']} GiB free under {settings['disk_path']}."
        )
    compose_said = compose if compose_ok else "missing: " + facts["compose_stderr"].strip()
    return False, (
        f"Host not ready: Docker {docker} (need >= {settings['min_docker_version']}), Compose {compose_said} "
        f"(need >= {settings['min_compose_version']}), free {disk} (need >= {settings['min_free_gib']})"
        + (
            f"; app_healthcheck_start_interval needs Docker >= {START_INTERVAL_MIN_DOCKER.split('.')[0]}: "
            "unset it or upgrade the engine"
            if start_interval_refused
            else ""
        )
        + "."
    )


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        docker_host = args["docker_host"]

        info = self._execute_module(
            "community.docker.docker_host_info", module_args={"docker_host": docker_host}, task_vars=task_vars
        )
        facts: dict[str, Any] = {
            "docker_error": info.get("msg", "failed") if info.get("failed") else "",
            "docker_version": (info.get("host_info") or {}).get("ServerVersion", ""),
            "system": args.get("system", ""),
            "distribution": args.get("distribution", ""),
            "distribution_version": args.get("distribution_version", ""),
        }
        if not facts["docker_error"]:
            # The same CLI the deploys run, pointed at the same engine (the task this replaces set DOCKER_HOST).
            compose = self._run(["docker", "--host", docker_host, "compose", "version", "--short"], task_vars)
            df = self._run(["df", "-Pk", args["disk_path"]], task_vars)
            if df.get("rc") != 0:
                result.update(failed=True, msg=f"df -Pk {args['disk_path']} failed: {df.get('stderr', '')}")
                return result
            facts.update(
                compose_rc=compose.get("rc", 1),
                compose_stdout=compose.get("stdout", ""),
                compose_stderr=compose.get("stderr", "") or compose.get("msg", ""),
                free_gib=free_gib(df["stdout"]),
            )
        ok, msg = host_verdict(facts, {**args, "host": task_vars.get("inventory_hostname", "")})
        # Shown without -v, as assert shows its success_msg.
        result.update(changed=False, failed=not ok, msg=msg, _ansible_verbose_always=True)
        return result

    def _run(self, argv: list[str], task_vars: dict) -> dict:
        return self._execute_module("ansible.builtin.command", module_args={"argv": argv}, task_vars=task_vars)
