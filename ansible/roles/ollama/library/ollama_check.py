#!/usr/bin/python
"""Ansible module ollama_check: Ollama answers where the containers reach it and has the configured models.

It runs on the host, where the containers' address for Ollama can be asked: the `docker` CLI for the default
bridge (Linux), then Ollama's HTTP API (https://github.com/ollama/ollama/blob/main/docs/api.md): /api/version,
/api/tags and, when asked, POST /api/pull. The decisions are the functions below, unit-tested in
tests/unit/test_checks.py. It runs under the host's own Python (on a Mac, Command Line Tools' 3.9), so it uses the
standard library and ansible's module_utils only.

ollama_address(bridge, configured_url, port, system)
    the URL the containers reach Ollama at, as seen from the host: configured_url when set; on macOS (Docker
    Desktop) the Mac's loopback, which host.docker.internal is there; on Linux the default bridge's gateway,
    which `host-gateway` is (https://docs.docker.com/reference/cli/docker/container/run/#add-host)
ollama_missing(models, present)
    the configured models /api/tags does not list; an untagged name means name:latest, as Ollama lists it
model_digests(models, listed)
    each configured model with the digest /api/tags lists for it, so a release can record what it served with
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url

DOCUMENTATION = r"""
module: ollama_check
short_description: Check that Ollama answers where the containers reach it and has the configured models
description:
  - Finds the address the containers reach Ollama at (I(url) when set; on macOS the host's loopback; on Linux the
    gateway of Docker's default bridge, read with C(docker network inspect bridge)), asks it for its version
    (C(GET /api/version)) and its models (C(GET /api/tags)).
  - With I(pull), pulls each configured model Ollama does not list (C(POST /api/pull)) and then reports a change.
  - Fails naming the address and what is missing; otherwise reports the version and the models in C(msg), and each
    configured model's digest in C(models).
options:
  url:
    description: Ollama's URL as the containers reach it; empty to derive it from I(system) and I(port).
    type: str
    default: ""
  port:
    description: The port Ollama listens on.
    type: int
    required: true
  models:
    description: The models Ollama must have (an untagged name means C(name:latest)).
    type: list
    elements: str
    required: true
  pull:
    description: Pull the models Ollama does not have instead of failing.
    type: bool
    default: false
  pull_timeout:
    description: Seconds one pull may take.
    type: int
    required: true
  timeout:
    description: Seconds for each of the other requests.
    type: int
    required: true
  system:
    description: The host's system (C(ansible_system)); C(Darwin) means Docker Desktop, whose containers reach the
      host's loopback.
    type: str
    required: true
  docker_host:
    description: The Docker engine's address (C(DOCKER_HOST)), asked for the default bridge on Linux.
    type: str
    required: true
requirements:
  - On Linux without I(url), the C(docker) CLI on the PATH.
notes:
  - Supports check mode; there it pulls nothing and reports in C(pulled) what it would pull.
author: local-llm-server
"""

EXAMPLES = r"""
- name: Check that Ollama answers where the containers look for it and has the models
  ollama_check:
    port: 11434
    models: [llama3.2:1b, all-minilm]
    pull_timeout: 1800
    timeout: 10
    system: "{{ ansible_system }}"
    docker_host: unix:///var/run/docker.sock
  register: ollama_check_result

- name: Pull what is missing
  ollama_check:
    port: 11434
    models: [llama3.2:1b]
    pull: true
    pull_timeout: 1800
    timeout: 10
    system: Darwin
    docker_host: unix:///var/run/docker.sock
"""

RETURN = r"""
msg:
  description: Ollama's version, its address and the models it has, or, on failure, what is missing.
  returned: always
  type: str
  sample: Ollama 0.12.6 answers at http://172.17.0.1:11434 and has llama3.2:1b and all-minilm.
version:
  description: Ollama's version (C(/api/version)); C(?) when it did not say.
  returned: when Ollama answered
  type: str
  sample: 0.12.6
models:
  description:
    - Each configured model with the digest C(/api/tags) lists for it (an untagged name is looked up as
      C(name:latest)); the name as configured.
    - C(digest) is null for a model Ollama does not list (then the check fails), or in check mode for one it
      would pull.
  returned: when Ollama listed its models
  type: list
  elements: dict
  contains:
    name:
      description: The model, as configured.
      type: str
      sample: all-minilm
    digest:
      description: Ollama's digest of the model.
      type: str
      sample: 1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef
pulled:
  description: The models pulled (in check mode, the models it would pull).
  returned: when Ollama listed its models
  type: list
  elements: str
  sample: [all-minilm]
"""

ARGUMENT_SPEC: dict[str, Any] = {
    "url": {"type": "str", "default": ""},
    "port": {"type": "int", "required": True},
    "models": {"type": "list", "elements": "str", "required": True},
    "pull": {"type": "bool", "default": False},
    "pull_timeout": {"type": "int", "required": True},
    "timeout": {"type": "int", "required": True},
    "system": {"type": "str", "required": True},
    "docker_host": {"type": "str", "required": True},
}


def ollama_address(bridge: dict[str, Any] | None, configured_url: str, port: int, system: str) -> str:
    """bridge: the default bridge as `docker network inspect bridge` describes it (None on macOS)."""
    if configured_url:
        return configured_url
    if system == "Darwin":
        return f"http://127.0.0.1:{port}"
    configs = ((bridge or {}).get("IPAM") or {}).get("Config") or [{}]
    gateway = configs[0].get("Gateway")
    if not gateway:
        # Older engines (Debian's 20.10) leave Gateway out of the default bridge's IPAM config; Docker then uses the
        # subnet's first address (172.17.0.1 for 172.17.0.0/16).
        subnet = ipaddress.ip_network(configs[0].get("Subnet") or "172.17.0.0/16", strict=False)
        gateway = str(next(subnet.hosts()))
    return f"http://{gateway}:{port}"


def _canonical(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def ollama_missing(models: list[str], present: list[str]) -> list[str]:
    listed = {_canonical(name) for name in present}
    return [model for model in models if _canonical(model) not in listed]


def model_digests(models: list[str], listed: list[dict[str, Any]]) -> list[dict[str, str | None]]:
    """listed: /api/tags' `models` ({name, digest, ...} each)."""
    digests = {_canonical(entry.get("name", "")): entry.get("digest") for entry in listed}
    return [{"name": model, "digest": digests.get(_canonical(model))} for model in models]


def not_answering(url: str, detail: str) -> str:
    return (
        f"Ollama does not answer at {url} (the address the containers use): {detail}. On a Mac, `make setup` "
        "installs and starts its launchd daemon (`sudo launchctl print system/com.local-llm-server.ollama` says how it "
        "runs); on Linux it must listen on the docker bridge too (OLLAMA_HOST=0.0.0.0 or the bridge address)."
    )


def models_verdict(url: str, version: str, models: list[str], present: list[str]) -> tuple[bool, str]:
    missing = ollama_missing(models, present)
    if missing:
        return False, (
            f"Ollama {version} at {url} does not have model {', model '.join(missing)} "
            f"(it has: {', '.join(present) or 'none'}). Run `make setup` (it pulls and loads the configured "
            "models), or deploy with -e ollama_pull=true."
        )
    return True, f"Ollama {version} answers at {url} and has {' and '.join(models)}."


def ask_ollama(module: AnsibleModule, url: str, timeout: int, body: dict | None = None) -> tuple[Any, str]:
    """(the JSON answer, '') for 200, else (None, why), worded as the uri module words it. A body means POST."""
    response, info = fetch_url(
        module,
        url,
        data=None if body is None else json.dumps(body),
        headers=None if body is None else {"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
        timeout=timeout,
    )
    if info["status"] != 200:
        return None, f"Status code was {info['status']} and not [200]: {info.get('msg', '')}"
    try:
        return json.loads(response.read()), ""
    except ValueError:
        return {}, ""


def listed_models(module: AnsibleModule, url: str, timeout: int) -> list[dict[str, Any]] | None:
    """/api/tags' models, or None when Ollama does not answer it."""
    tags, _ = ask_ollama(module, f"{url}/api/tags", timeout)
    return None if tags is None else (tags or {}).get("models", [])


def read_bridge(module: AnsibleModule) -> dict[str, Any]:
    """The default bridge as `docker network inspect bridge` describes it, from the engine at docker_host."""
    docker = module.get_bin_path("docker")
    if docker is None:
        module.fail_json(msg="Cannot read the Docker bridge: no docker command on the PATH")
    rc, stdout, stderr = module.run_command(
        [docker, "network", "inspect", "bridge"], environ_update={"DOCKER_HOST": module.params["docker_host"]}
    )
    if rc != 0:
        module.fail_json(msg=f"Cannot read the Docker bridge: {stderr.strip() or stdout.strip()}")
    try:
        return json.loads(stdout)[0]
    except (ValueError, IndexError) as error:
        module.fail_json(msg=f"Cannot read the Docker bridge: `docker network inspect bridge` printed {error}")


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    bridge = None
    if not params["url"] and params["system"] != "Darwin":
        bridge = read_bridge(module)
    url = ollama_address(bridge, params["url"], params["port"], params["system"])

    answer, detail = ask_ollama(module, f"{url}/api/version", params["timeout"])
    if answer is None:
        module.fail_json(msg=not_answering(url, detail))
    version = (answer or {}).get("version", "?")

    listed = listed_models(module, url, params["timeout"])
    if listed is None:
        module.fail_json(msg=f"Ollama at {url} answers /api/version but not /api/tags", version=version)
    present = [entry["name"] for entry in listed]
    pulled = ollama_missing(params["models"], present) if params["pull"] else []
    if pulled and module.check_mode:
        # What this run would have once it pulled them.
        present = present + pulled
    elif pulled:
        for model in pulled:
            _, detail = ask_ollama(module, f"{url}/api/pull", params["pull_timeout"], {"model": model, "stream": False})
            if detail:
                module.fail_json(msg=f"Pulling {model} from Ollama failed: {detail}", version=version)
        listed = listed_models(module, url, params["timeout"]) or []
        present = [entry["name"] for entry in listed]

    ok, msg = models_verdict(url, version, params["models"], present)
    result = {"msg": msg, "version": version, "models": model_digests(params["models"], listed), "pulled": pulled}
    if not ok:
        module.fail_json(**result)
    module.exit_json(changed=bool(pulled), **result)


if __name__ == "__main__":
    main()
