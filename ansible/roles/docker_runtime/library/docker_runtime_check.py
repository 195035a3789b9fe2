#!/usr/bin/python
"""Ansible module docker_runtime_check: the host's Docker engine, Compose plugin and free disk, read on the host.

It asks the `docker` CLI the deploys use (pointed at the same engine through DOCKER_HOST) and the file system; the
verdict is `host_verdict`, unit-tested in tests/unit/test_checks.py. It runs under the host's own Python (on a Mac,
Command Line Tools' 3.9), so it uses the standard library and ansible's module_utils only.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.compat.version import LooseVersion

DOCUMENTATION = r"""
module: docker_runtime_check
short_description: Check the host's Docker engine, Compose plugin and free disk
description:
  - Asks the Docker engine at I(docker_host) for its version (C(docker version)), the Compose plugin for its version
    (C(docker compose version --short)) and the file system for the space free under I(disk_path).
  - Fails with one message naming what was found and what is needed; otherwise reports what it found in C(msg).
  - Reads only; never reports a change.
options:
  docker_host:
    description: The Docker engine's address, given to the C(docker) CLI as C(DOCKER_HOST).
    type: str
    required: true
  min_docker_version:
    description: Oldest Docker Engine accepted.
    type: str
    required: true
  min_compose_version:
    description: Oldest Compose v2 plugin accepted.
    type: str
    required: true
  min_free_gib:
    description: Free GiB required under I(disk_path).
    type: float
    required: true
  disk_path:
    description: Where images and releases land (the home directory).
    type: path
    required: true
  start_interval:
    description: The compose healthcheck's C(start_interval); when set, the engine must be at least 25.
    type: str
    default: ""
  host_name:
    description: The name the report gives the host (the inventory's).
    type: str
    required: true
  system:
    description: The host's system (C(ansible_system)), named in the report.
    type: str
    required: true
  distribution:
    description: The host's distribution (C(ansible_distribution)), named in the report.
    type: str
    default: ""
  distribution_version:
    description: The distribution's version (C(ansible_distribution_version)), named in the report.
    type: str
    default: ""
requirements:
  - The C(docker) CLI with the Compose v2 plugin on the PATH.
notes:
  - Supports check mode (it only reads).
author: local-llm-server
"""

EXAMPLES = r"""
- name: Check the Docker engine, the Compose plugin and the free disk
  docker_runtime_check:
    docker_host: unix:///var/run/docker.sock
    min_docker_version: "20.10"
    min_compose_version: "2.18.0"
    min_free_gib: 5
    disk_path: /Users/deploy
    host_name: "{{ inventory_hostname }}"
    system: "{{ ansible_system }}"
    distribution: "{{ ansible_distribution }}"
    distribution_version: "{{ ansible_distribution_version }}"
"""

RETURN = r"""
msg:
  description: What was found (the host, the versions, the free space), or, on failure, what is missing.
  returned: always
  type: str
  sample: "mini: Darwin MacOSX 15.1, Docker 27.3.1 at unix:///var/run/docker.sock, Compose 2.29.7, 120.5 GiB free under
    /Users/deploy."
"""

ARGUMENT_SPEC: dict[str, Any] = {
    "docker_host": {"type": "str", "required": True},
    "min_docker_version": {"type": "str", "required": True},
    "min_compose_version": {"type": "str", "required": True},
    "min_free_gib": {"type": "float", "required": True},
    "disk_path": {"type": "path", "required": True},
    "start_interval": {"type": "str", "default": ""},
    "host_name": {"type": "str", "required": True},
    "system": {"type": "str", "required": True},
    "distribution": {"type": "str", "default": ""},
    "distribution_version": {"type": "str", "default": ""},
}

# Compose's healthcheck start_interval needs Docker Engine >= 25
# (https://docs.docker.com/reference/compose-file/services/#healthcheck).
START_INTERVAL_MIN_DOCKER = "25.0"


def _at_least(version: str, minimum: str) -> bool:
    try:
        return LooseVersion(version) >= LooseVersion(minimum)
    except TypeError:
        return False


def engine_version(rc: int, stdout: str, stderr: str) -> tuple[str, str]:
    """(the engine's version, '') from `docker version --format '{{json .}}'`, or ('', why) when the engine did not
    answer: the CLI then exits non-zero and prints its own version with `"Server": null`."""
    if rc == 0:
        try:
            server = json.loads(stdout).get("Server") or {}
        except (ValueError, AttributeError):
            server = {}
        if server.get("Version"):
            return server["Version"], ""
    return "", stderr.strip() or stdout.strip() or f"docker version exited with {rc}"


def free_gib(free_bytes: int) -> float:
    """The space left to an unprivileged user (what `df` calls Available), in GiB to one decimal."""
    return round(free_bytes / 1024**3, 1)


def host_verdict(facts: dict[str, Any], settings: dict[str, Any]) -> tuple[bool, str]:
    """(ok, message) from what the host answered.

    facts: docker_error (str, empty when the engine answered), docker_version, compose_rc, compose_stdout,
    compose_stderr, free_gib, system, distribution, distribution_version.
    settings: docker_host, min_docker_version, min_compose_version, min_free_gib, disk_path, start_interval, host.
    """
    if facts["docker_error"]:
        # The CLI's own sentence ("... Is the docker daemon running?") keeps its punctuation.
        said = facts["docker_error"].strip()
        said += "" if said.endswith((".", "?", "!")) else "."
        return False, (
            f"The Docker engine at {settings['docker_host']} does not answer: {said} "
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


def run_docker(module: AnsibleModule, args: list[str]) -> tuple[int, str, str]:
    """`docker ARGS` against the engine at docker_host; (127, '', why) when there is no docker CLI on the PATH."""
    docker = module.get_bin_path("docker")
    if docker is None:
        return 127, "", "no docker command on the PATH"
    return module.run_command([docker, *args], environ_update={"DOCKER_HOST": module.params["docker_host"]})


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    rc, stdout, stderr = run_docker(module, ["version", "--format", "{{json .}}"])
    version, error = engine_version(rc, stdout, stderr)
    facts: dict[str, Any] = {
        "docker_error": error,
        "docker_version": version,
        "system": params["system"],
        "distribution": params["distribution"],
        "distribution_version": params["distribution_version"],
    }
    if not error:
        compose_rc, compose_stdout, compose_stderr = run_docker(module, ["compose", "version", "--short"])
        try:
            free = shutil.disk_usage(params["disk_path"]).free
        except OSError as failure:
            module.fail_json(msg=f"Cannot read the free space under {params['disk_path']}: {failure}")
        facts.update(
            compose_rc=compose_rc, compose_stdout=compose_stdout, compose_stderr=compose_stderr, free_gib=free_gib(free)
        )
    ok, msg = host_verdict(facts, {**params, "host": params["host_name"]})
    if not ok:
        module.fail_json(msg=msg)
    module.exit_json(changed=False, msg=msg)


if __name__ == "__main__":
    main()
