"""The blue/green deploy's decisions, computed from what the host shows (app_deploy's tasks carry them out).

    observed | bluegreen_plan(tag, colors, release_time, ...)   what this run does, and with which colours
    plan | bluegreen_switch_failed(back_on_old)                  what a failed switch leaves, and what it says

`observed` is what the `app` role's tasks/live.yml reads for one environment (app_live_state): the colour the proxy's
config names, the api containers by colour (tag and release labels, running, health), whether the proxy runs, and
whether /ready through the environment's port answered from that colour (X-Api-Color: the colour nginx has loaded).

The plan's `action` is one of:
  nothing  the live colour runs the tag with the files' settings and answers through the proxy;
  finish   the same, but an earlier run was cut short after its switch: retire the idle colour, record the release;
  reload   the live colour runs the tag, but nginx has not loaded its file (a new proxy setting, a run killed
           between writing the file and the reload): reload, ask again, then plan once more with the answer;
  cutover  start the tag as the other colour, gate it, switch the proxy to it, retire the old one.
Deploying and rolling back are the same plan: a rollback only chooses another tag (release_history).

Unit-tested in tests/unit/test_deploy_plan.py (every state: first deploy, same tag healthy, proxy stopped, live
colour not answering, killed before or after the switch, a failed switch). The shape of the approach follows
Kamal's deploy (basecamp/kamal lib/kamal/cli/main.rb): decisions in code with tests, the host's commands in order.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

ACTIONS = ("nothing", "finish", "reload", "cutover")


def _slots(color: str, tag: str, release: str) -> dict[str, dict[str, str]]:
    return {color: {"tag": tag, "release": release}} if color else {}


def bluegreen_plan(
    observed: dict[str, Any],
    tag: str,
    colors: list[str],
    release_time: str,
    last_success: str = "",
    in_sync: bool | None = None,
    proxy_conf_changed: bool = False,
    answered_after_reload: bool | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """What this run does to deploy `tag` (see the module docstring).

    in_sync: compose, asked in check mode, would change neither the live colour nor the proxy (None: not asked,
      because the live colour runs another tag). proxy_conf_changed: writing the proxy's file for the live colour
      changed it. answered_after_reload: the second call, after a `reload` plan: did the live colour then answer?
    """
    if not tag:
        raise AnsibleFilterError("bluegreen_plan: no tag to deploy")
    if len(colors) != 2 or colors[0] == colors[1]:
        raise AnsibleFilterError(f"bluegreen_plan: need two distinct colours, got {colors!r}")
    containers = observed.get("containers") or {}
    conf_color = observed.get("color") or ""
    live = containers.get(conf_color) if conf_color else None
    live_color = conf_color if live else ""
    previous_tag = live["tag"] if live else ""
    previous_release = live["release"] if live else ""
    same_tag = bool(live) and previous_tag == tag
    # The live colour answered /ready through the proxy (app tasks/answers.yml), or did after the reload.
    answers = bool(live) and bool(observed.get("answered") if answered_after_reload is None else answered_after_reload)
    idle = sorted(color for color in containers if color != live_color)

    plan: dict[str, Any] = {
        "live_color": live_color,
        "previous_tag": previous_tag,
        "previous_release": previous_release,
        # The release id names one cut-over to one tag. A run that does not cut over keeps the live one, so the
        # files come out byte-identical (idempotence); a cut-over gets a new one (below).
        "release": previous_release,
        "idle": idle,
        # The compose file describing what serves now: written back when a new colour is refused.
        "restore_slots": _slots(live_color, previous_tag, previous_release),
    }

    if same_tag and in_sync is None and not force:
        raise AnsibleFilterError("bluegreen_plan: the live colour runs the tag; ask compose whether it is in sync")
    proxy_running = bool(observed.get("proxy_running"))
    if force:
        reason = "forced (app_deploy_force)"
    elif not live:
        reason = (
            "nothing serves yet" if not containers else f"the proxy's colour ({conf_color or 'none'}) has no container"
        )
    elif not same_tag:
        reason = f"{previous_tag or 'an untagged container'} serves, {tag} is asked for"
    elif not in_sync:
        reason = "the settings changed (compose would recreate the live colour or the proxy)"
    elif not proxy_running:
        reason = "the proxy is not running"
    elif answered_after_reload is None and (proxy_conf_changed or not answers):
        # nginx has not loaded the file naming the live colour (new settings, or a run killed between writing it
        # and the reload): a reload settles it, unless the colour itself is broken (then the next plan cuts over).
        why = "the proxy's settings changed" if proxy_conf_changed else "the proxy does not answer from its colour"
        return {**plan, "action": "reload", "reason": why}
    elif not answers:
        reason = f"api-{live_color} does not answer /ready through the proxy"
    else:
        finish = bool(idle) or last_success != tag
        return {
            **plan,
            "action": "finish" if finish else "nothing",
            "reason": (
                f"{tag} serves from api-{live_color}; finishing what an earlier run left"
                f" ({'retire ' + ', '.join('api-' + c for c in idle) if idle else 'record the release'})"
                if finish
                else f"{tag} already serves from api-{live_color} with the same settings; nothing to do"
            ),
            # The colours to stop and remove (docker stop: SIGTERM, in-flight requests finish, then the container goes).
            "retire": idle,
            "record": last_success != tag,
        }

    # Cut over. The new colour is the one the proxy does not send traffic to; with nothing serving, the colour the
    # proxy's file names (if any) or the first one, so a first deploy is blue.
    if live_color:
        new_color = colors[1] if live_color == colors[0] else colors[0]
    else:
        new_color = conf_color if conf_color in colors else colors[0]
    release = f"{release_time}-{tag}"
    return {
        **plan,
        "action": "cutover",
        "reason": reason,
        "new_color": new_color,
        "release": release,
        # Gate: both colours in the compose file (only the new one is started). After: the new colour alone.
        "gate_slots": {**plan["restore_slots"], **_slots(new_color, tag, release)},
        "final_slots": _slots(new_color, tag, release),
        # After the switch: every other colour's container (the old live one, and any a killed run left idle).
        "retire": sorted(color for color in containers if color != new_color),
        # With nothing serving, whatever else of the project the files do not name (an earlier layout's container
        # on the port) goes, but only once the new colour has passed the gate.
        "remove_orphans_on_switch": not live_color,
    }


def bluegreen_switch_failed(plan: dict[str, Any], back_on_old: bool) -> dict[str, Any]:
    """After the proxy could not be switched to the new colour and was pointed back (when something served before):
    remove the new colour only when the old one answers again, or when nothing served before (then the new colour
    serves nobody); otherwise it may be what serves, so keep both and say what to do."""
    live = plan["live_color"]
    if not live:
        return {"remove_new": True, "outcome": "There was no previous release to restore."}
    if back_on_old:
        return {"remove_new": True, "outcome": f"Restored {plan['previous_tag']}."}
    return {
        "remove_new": False,
        "outcome": (
            f"Could not switch the proxy back to api-{live}; both colours were kept. Fix the proxy container, "
            "then deploy again."
        ),
    }


class FilterModule:
    def filters(self):
        return {"bluegreen_plan": bluegreen_plan, "bluegreen_switch_failed": bluegreen_switch_failed}
