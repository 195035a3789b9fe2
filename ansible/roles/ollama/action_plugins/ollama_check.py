"""Action `ollama_check`: Ollama answers where the containers reach it and has the configured models, in one task.

Why one action instead of a task per request: a run's time is mostly its number of task results (make
bench-deploy), and this check runs in every deploy and rollback. The module calls are the ones the tasks made
(community.docker.docker_network_info for the bridge, ansible.builtin.uri for /api/version, /api/tags and, when
asked, POST /api/pull: https://github.com/ollama/ollama/blob/main/docs/api.md); the decisions are the functions
below, unit-tested in tests/unit/test_checks.py. Reports changed only when it pulled a model.

bridge_info | ollama_address(configured_url, port, system)
    the URL the containers reach Ollama at, as seen from the host: configured_url when set; on macOS (Docker
    Desktop) the Mac's loopback, which host.docker.internal is there; on Linux the default bridge's gateway,
    which `host-gateway` is (https://docs.docker.com/reference/cli/docker/container/run/#add-host)
ollama_missing(models, present)
    the configured models /api/tags does not list; an untagged name means name:latest, as Ollama lists it
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase


def ollama_address(bridge_info: dict[str, Any] | None, configured_url: str, port: int, system: str) -> str:
    if configured_url:
        return configured_url
    if system == "Darwin":
        return f"http://127.0.0.1:{port}"
    configs = (((bridge_info or {}).get("network") or {}).get("IPAM") or {}).get("Config") or [{}]
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


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        self._vars = task_vars
        bridge = None
        if not args["url"] and args["system"] != "Darwin":
            bridge = self._module(
                "community.docker.docker_network_info", name="bridge", docker_host=args["docker_host"]
            )
            if bridge.get("failed"):
                return {**result, "failed": True, "msg": f"Cannot read the Docker bridge: {bridge.get('msg', '')}"}
        url = ollama_address(bridge, args["url"], int(args["port"]), args["system"])
        timeout = int(args["timeout"])

        answer = self._module("ansible.builtin.uri", url=f"{url}/api/version", timeout=timeout)
        if answer.get("failed"):
            return {**result, "failed": True, "msg": not_answering(url, answer.get("msg", ""))}
        version = (answer.get("json") or {}).get("version", "?")

        present = self._model_names(url, timeout)
        if present is None:
            return {**result, "failed": True, "msg": f"Ollama at {url} answers /api/version but not /api/tags"}
        pulled = []
        if boolean(args["pull"]):
            for model in ollama_missing(args["models"], present):
                pull = self._module(
                    "ansible.builtin.uri",
                    url=f"{url}/api/pull",
                    method="POST",
                    body_format="json",
                    body={"model": model, "stream": False},
                    timeout=int(args["pull_timeout"]),
                )
                if pull.get("failed"):
                    return {**result, "failed": True, "msg": f"Pulling {model} from Ollama failed: {pull.get('msg')}"}
                pulled.append(model)
            if pulled:
                present = self._model_names(url, timeout) or []

        ok, msg = models_verdict(url, version, args["models"], present)
        # Shown without -v, as assert shows its success_msg.
        result.update(changed=bool(pulled), failed=not ok, msg=msg, pulled=pulled, _ansible_verbose_always=True)
        return result

    def _model_names(self, url: str, timeout: int) -> list[str] | None:
        tags = self._module("ansible.builtin.uri", url=f"{url}/api/tags", timeout=timeout)
        if tags.get("failed"):
            return None
        return [model["name"] for model in (tags.get("json") or {}).get("models", [])]

    def _module(self, module: str, /, **module_args) -> dict:
        return self._execute_module(module, module_args=module_args, task_vars=self._vars)
