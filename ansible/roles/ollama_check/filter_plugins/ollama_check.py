"""Where to ask Ollama, and which configured models it lacks (tested in tests/unit/test_deploy_plan.py).

bridge_info | ollama_check_address(configured_url, port, system)
    the URL the containers reach Ollama at, as seen from the host: configured_url when set; on macOS (Docker
    Desktop) the Mac's loopback, which host.docker.internal is there; on Linux the default bridge's gateway,
    which `host-gateway` is (https://docs.docker.com/reference/cli/docker/container/run/#add-host)
models | ollama_check_missing(present)
    the configured models /api/tags does not list; an untagged name means name:latest, as Ollama lists it
"""

from __future__ import annotations

import ipaddress
from typing import Any


def ollama_check_address(bridge_info: dict[str, Any] | None, configured_url: str, port: int, system: str) -> str:
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


def ollama_check_missing(models: list[str], present: list[str]) -> list[str]:
    listed = {_canonical(name) for name in present}
    return [model for model in models if _canonical(model) not in listed]


class FilterModule:
    def filters(self):
        return {"ollama_check_address": ollama_check_address, "ollama_check_missing": ollama_check_missing}
