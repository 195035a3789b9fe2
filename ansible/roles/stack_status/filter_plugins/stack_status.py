"""One environment's line of the stack report, and whether it is healthy (tested in tests/unit/test_deploy_plan.py).

app_live[env] | stack_status_row(last_release)
    healthy: the colour the proxy's file names runs, healthy (or without a healthcheck), answers /ready through
    the proxy from that colour (nginx has loaded its file), and runs the environment's last successful release
    (a container started by hand is drift)
"""

from __future__ import annotations

from typing import Any


def stack_status_row(live: dict[str, Any], last_release: str) -> dict[str, Any]:
    container = (live.get("containers") or {}).get(live.get("color") or "", {})
    health = container.get("health", "absent")
    return {
        "color": live.get("color") or "-",
        "served_color": live.get("served_color") or "-",
        "running": bool(container.get("running")),
        "health": health,
        "tag": live.get("tag", ""),
        "last_release": last_release,
        "ready": int(live.get("ready_status", -1)) == 200,
        "ready_detail": live.get("ready_detail", ""),
        "idle": live.get("idle", []),
        "healthy": bool(
            container.get("running")
            and health in ("healthy", "none")
            and live.get("answered")
            and live.get("tag")
            and live.get("tag") == last_release
        ),
    }


class FilterModule:
    def filters(self):
        return {"stack_status_row": stack_status_row}
