"""The release's decisions, in tested functions (tests/unit/test_deploy_plan.py); the role's tasks carry them out.

The program is tasks/main.yml. In its order, what each step asks here:
    app_root | release_paths(env)                      where an environment's stack lives on the host
    env | release_input_problems(...)                  what is wrong with the run's inputs ([] = go on)
    reply | release_registry_token_url(image_path)     ghcr.io's Bearer challenge answered with a token URL
    status | release_registry_detail(message, url)     what the registry's answer means, without credentials
    holder | release_lock_dead_holders(...)            a lock left by a run of this controller that is gone
    containers | release_live_state(conf, reply, colors)  what serves an environment now
    entries | release_rollback_target(...)             the tag a rollback returns to
    observed | release_plan(tag, colors, time, ...)    what this run does, and with which colours
    reply | release_ready_answer(color)                did /ready through the proxy come from that colour?
    plan | release_switch_failed(back_on_old)          what a failed switch leaves, and what it says
    tags_reply | release_served_models                 the models the new colour serves, with Ollama's digests
and for the history and verify's report: release_history_parse, release_last_success, release_successes,
release_keep, release_status_row, release_stack_models, release_models_over_limit, release_models_changed.

The plan's `action` is one of:
  nothing  the live colour runs the tag with the files' settings and answers through the proxy;
  finish   the same, but an earlier run was cut short after its switch: retire the idle colour, record the release;
  reload   the live colour runs the tag, but nginx has not loaded its file (a new proxy setting, a run killed
           between writing the file and the reload): reload, ask again, then plan once more with the answer;
  cutover  start the tag as the other colour, gate it, switch the proxy to it, retire the old one.
Deploying and rolling back are the same plan: a rollback only chooses another tag. The shape follows Kamal's deploy
(basecamp/kamal lib/kamal/cli/main.rb): decisions in code with tests, the host's commands in order.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any
from urllib.parse import quote

from ansible.errors import AnsibleFilterError


# --- Where things are ---------------------------------------------------------------------------------------------
def release_paths(app_root: str, env: str) -> dict[str, str]:
    """One environment's stack on the host: <app_root>/<env>/ with its compose file, env file and proxy config."""
    stack = f"{app_root}/{env}"
    return {
        "dir": stack,
        "compose_file": f"{stack}/compose.yml",
        "env_file": f"{stack}/.env.{env}",
        "proxy_dir": f"{stack}/proxy",
        "proxy_conf": f"{stack}/proxy/nginx.conf",
    }


# --- The run's inputs -----------------------------------------------------------------------------------------------
# registry host[:port]/path, the shape `docker pull` accepts for a repository (lower case, no tag).
REPOSITORY = re.compile(r"^[a-z0-9.:-]+/[a-z0-9._/-]+$")


def release_input_problems(
    app_env: Any,
    environments: dict[str, Any],
    image_repository: Any,
    tag: Any,
    action: str,
    tag_pattern: str,
    channel_tags: list[str],
) -> list[str]:
    """Each problem as the message that says how to fix it."""
    problems = []
    if not isinstance(app_env, str) or app_env not in environments:
        problems.append(
            f"app_env must be one of {', '.join(environments)}, got '{app_env}'. The staging/production inventories"
            " set it; with inventories/local pass -e app_env=staging|production (make: ENV=staging|production)."
        )
    if not isinstance(image_repository, str) or not REPOSITORY.match(image_repository):
        problems.append("image_repository must be set in the inventory (e.g. ghcr.io/<owner>/local-llm-server).")
    tag = tag if isinstance(tag, str) else ""
    # A rollback may leave the tag out (the history chooses it); a tag given is checked all the same.
    if (action == "deploy" or tag) and not (re.search(tag_pattern, tag) or tag in channel_tags):
        channels = f" or be one of {', '.join(channel_tags)}" if channel_tags else ""
        problems.append(
            f"image_tag must match {tag_pattern}{channels}; got '{tag or '(not given)'}'. Pass -e "
            "image_tag=sha-<commit> (the tag CI pushed; make: IMAGE_TAG=...)."
        )
    return problems


# --- The registry (HEAD on the manifest: https://distribution.github.io/distribution/spec/api/#existing-manifests) --
CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
CREDENTIALS_IN_URL = re.compile(r"://[^@/]*@")


def bearer_challenge(www_authenticate: str | None) -> dict[str, str] | None:
    header = www_authenticate or ""
    if not header.lower().startswith("bearer "):
        return None
    return dict(CHALLENGE_PARAM.findall(header))


def release_registry_token_url(reply: dict[str, Any], image_path: str) -> str:
    """Plain registries (the testbed's) accept basic auth directly; ghcr.io and Docker Hub answer 401 with
    `WWW-Authenticate: Bearer realm=...,service=...`, so a pull token is asked of that realm with the same
    credentials (https://distribution.github.io/distribution/spec/auth/token/). '' when no token is needed."""
    challenge = bearer_challenge(reply.get("www_authenticate"))
    if int(reply.get("status", -1)) != 401 or not challenge or not challenge.get("realm"):
        return ""
    service = quote(challenge.get("service", ""), safe="/")
    scope = quote(f"repository:{image_path}:pull", safe="/")
    return f"{challenge['realm']}?service={service}&scope={scope}"


def release_registry_detail(status: Any, message: str, registry_url: str) -> str:
    status = int(status if status not in (None, "") else -1)
    if status == 200:
        return "present"
    if status == 401:
        return "credentials rejected (HTTP 401)"
    if status == 404:
        return "no such tag (HTTP 404)"
    return f"registry {registry_url} did not answer: {CREDENTIALS_IN_URL.sub('://***@', message or '')}"


# --- The lock's holder --------------------------------------------------------------------------------------------
def release_lock_holder_id(run_id: str, controller: str, controller_pid: Any) -> str:
    """A CI run is its run id (a re-run job takes its own lock back); elsewhere the controller and its pid."""
    return run_id or f"{controller}:{str(controller_pid).strip()}"


def pid_alive(pid: int) -> bool:
    # Signal 0 only checks (https://docs.python.org/3/library/os.html#os.kill).
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, run by someone else
    return True


def release_lock_dead_holders(holder_read: Any, controller: str, own_id: str, alive=pid_alive) -> list[str]:
    """[holder's id] when the lock's holder (slurp's result for holder.json, or the parsed dict) is another run of this
    controller whose ansible-playbook is gone (SIGKILL, a closed lid): its lock is broken at once instead of going
    stale. Filters run on the controller, so this asks the controller's process table."""
    holder = holder_read
    if isinstance(holder_read, dict) and "content" in holder_read:
        try:
            holder = json.loads(base64.b64decode(holder_read["content"]))
        except ValueError:
            holder = {}
    holder = holder if isinstance(holder, dict) else {}
    pid = str(holder.get("controller_pid", ""))
    if holder.get("controller") != controller or not pid.isdigit() or holder.get("id") in (None, own_id):
        return []
    return [] if alive(int(pid)) else [holder["id"]]


# --- What serves an environment now -------------------------------------------------------------------------------
# The line templates/nginx.conf.j2 writes; nginx uses it, and this is where it is read back.
COLOR_LINE = re.compile(r"^\s*set \$api_color (\w+);", re.M)
TAG_LABEL = "io.local-llm-server.tag"
RELEASE_LABEL = "io.local-llm-server.release"
SERVICE_LABEL = "com.docker.compose.service"
HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def release_proxy_color(conf_text: str | None) -> str:
    match = COLOR_LINE.search(conf_text or "")
    return match.group(1) if match else ""


def _health(status: str) -> str:
    """Health from `docker ps`'s status text: "Up 3 minutes (healthy)", "(health: starting)", or none."""
    match = HEALTH.search(status or "")
    return {"health: starting": "starting"}.get(match.group(1), match.group(1)) if match else "none"


def release_ready_answer(reply: dict[str, Any], color: str) -> dict[str, Any]:
    """reply: what ansible.builtin.uri returned for /ready through the proxy (status -1 and msg when nothing answered;
    response headers as lower-case keys: https://docs.ansible.com/ansible/latest/collections/ansible/builtin/uri_module.html#return-values).
    The proxy names the colour it sent the request to (X-Api-Color), so this says whether nginx has loaded the colour
    we expect, not only that something answered."""
    reply = reply or {}
    status = int(reply.get("status", -1))
    served = reply.get("x_api_color") or ""
    body = reply.get("content", reply.get("msg", ""))
    return {
        "answered": bool(color) and status == 200 and served == color,
        "status": status,
        "served_color": served,
        "detail": f"HTTP {reply.get('status', 'no answer')} from {served or 'no colour'} {str(body)[:200]}",
    }


def release_live_state(
    containers: list[dict[str, Any]], conf_text: str | None, ready_reply: dict[str, Any], colors: list[str]
) -> dict[str, Any]:
    """containers: the environment's compose project as community.docker.docker_host_info lists it (containers_all,
    verbose_output); conf_text: its proxy config; ready_reply: /ready through its port (ansible.builtin.uri)."""
    by_service = {(c.get("Labels") or {}).get(SERVICE_LABEL): c for c in containers or []}
    color = release_proxy_color(conf_text)
    apis = {}
    for name in colors:
        info = by_service.get(f"api-{name}")
        if info:
            labels = info.get("Labels") or {}
            apis[name] = {
                "tag": labels.get(TAG_LABEL, ""),
                "release": labels.get(RELEASE_LABEL, ""),
                "running": info.get("State") == "running",
                "health": _health(info.get("Status", "")),
            }
    live = apis.get(color, {})
    answer = release_ready_answer(ready_reply, color)
    return {
        "color": color,
        "containers": apis,
        "proxy_running": (by_service.get("proxy") or {}).get("State") == "running",
        "answered": answer["answered"],
        "ready_status": answer["status"],
        "served_color": answer["served_color"],
        "ready_detail": answer["detail"],
        "tag": live.get("tag", ""),
        "release": live.get("release", ""),
        "idle": [name for name in apis if name != color],
    }


# --- The plan -----------------------------------------------------------------------------------------------------
ACTIONS = ("nothing", "finish", "reload", "cutover")


def _slots(color: str, tag: str, release: str) -> dict[str, dict[str, str]]:
    return {color: {"tag": tag, "release": release}} if color else {}


def release_plan(
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
        raise AnsibleFilterError("release_plan: no tag to deploy")
    if len(colors) != 2 or colors[0] == colors[1]:
        raise AnsibleFilterError(f"release_plan: need two distinct colours, got {colors!r}")
    containers = observed.get("containers") or {}
    conf_color = observed.get("color") or ""
    live = containers.get(conf_color) if conf_color else None
    live_color = conf_color if live else ""
    previous_tag = live["tag"] if live else ""
    previous_release = live["release"] if live else ""
    same_tag = bool(live) and previous_tag == tag
    # The live colour answered /ready through the proxy (asked in tasks/main.yml), or did after the reload.
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
        raise AnsibleFilterError("release_plan: the live colour runs the tag; ask compose whether it is in sync")
    proxy_running = bool(observed.get("proxy_running"))
    if force:
        reason = "forced (release_force)"
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


def release_switch_failed(plan: dict[str, Any], back_on_old: bool) -> dict[str, Any]:
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


# --- The history: one JSON object per line (time, env, tag, digest, actor, result, action, release, cause, models) --
def release_history_parse(slurped: dict[str, Any] | None) -> list[dict[str, Any]]:
    """slurp's result for the history file: no content (the file does not exist yet) is an empty history."""
    content = base64.b64decode((slurped or {}).get("content") or "").decode("utf-8")
    return [json.loads(line) for line in content.splitlines() if line.strip()]


def _successes(entries: list[dict[str, Any]], env: str | None = None) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("result") == "success" and (env is None or e.get("env") == env)]


def release_last_success(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{env: its newest successful record}. Later entries overwrite earlier ones."""
    return {e["env"]: e for e in _successes(entries)}


def release_successes(entries: list[dict[str, Any]], env: str) -> list[str]:
    """That env's successful tags, oldest first, once each."""
    return list(dict.fromkeys(e["tag"] for e in _successes(entries, env)))


def release_keep(entries: list[dict[str, Any]], count: int) -> list[str]:
    """The newest `count` distinct successful tags of any env: their images stay for a registry-free rollback."""
    newest_first = list(dict.fromkeys(e["tag"] for e in reversed(_successes(entries))))
    return newest_first[: int(count)]


def release_rollback_target(
    entries: list[dict[str, Any]], env: str, running: str, requested: str = "", history_file: str = "the history"
) -> str:
    """`requested` when given; else the newest successful release of `env` whose tag is not the running one (so two
    rollbacks in a row toggle between the last two releases, like Kamal's `rollback`: basecamp/kamal#1658)."""
    if requested:
        return requested
    earlier = [e["tag"] for e in _successes(entries, env) if e["tag"] != running]
    if not earlier:
        raise AnsibleFilterError(
            f"No earlier successful release of {env} in {history_file} (running: {running or 'nothing'}). "
            "Name one with -e image_tag=sha-... (make: IMAGE_TAG=...)"
        )
    return earlier[-1]


# --- verify's report ----------------------------------------------------------------------------------------------
def release_status_row(live: dict[str, Any], last_release: str) -> dict[str, Any]:
    """healthy: the colour the proxy's file names runs, healthy (or without a healthcheck), answers /ready through
    the proxy from that colour (nginx has loaded its file), and runs the environment's last successful release (a
    container started by hand is drift)."""
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


# Ollama's default OLLAMA_MAX_LOADED_MODELS on a Mac: 3 per GPU, and Apple silicon has one (envconfig/config.go).
OLLAMA_DEFAULT_MAX_LOADED = 3


def _tagged(name: str) -> str:
    # Ollama lists "llama3.2" as "llama3.2:latest".
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def release_stack_models(env_file_text: str) -> list[str]:
    """The models a stack may ask Ollama for: its env file's ALLOWED_MODELS and EMBED_MODEL_NAME."""
    settings = {}
    for line in env_file_text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.lstrip().startswith("#"):
            settings[name.strip()] = value.strip()
    names = [*settings.get("ALLOWED_MODELS", "").split(","), settings.get("EMBED_MODEL_NAME", "")]
    return list(dict.fromkeys(_tagged(n.strip()) for n in names if n.strip()))


def release_models_over_limit(models_by_env: dict[str, list[str]], max_loaded: str | int = "") -> str:
    """'' when every model of every stack can stay loaded at once under OLLAMA_MAX_LOADED_MODELS ('' = Ollama's
    default: https://docs.ollama.com/faq), else a warning naming them and the limit."""
    limit = int(max_loaded) if str(max_loaded).strip() else OLLAMA_DEFAULT_MAX_LOADED
    models = list(dict.fromkeys(_tagged(m) for env in sorted(models_by_env) for m in models_by_env[env]))
    if len(models) <= limit:
        return ""
    each = "; ".join(f"{env}: {', '.join(models_by_env[env]) or 'none'}" for env in sorted(models_by_env))
    return (
        f"{len(models)} models of the stacks ({each}) cannot all stay loaded in Ollama, which keeps {limit} at once "
        f"(OLLAMA_MAX_LOADED_MODELS{' default' if not str(max_loaded).strip() else ''}): a request for one may wait "
        "for another to be unloaded and this one loaded. Raise app_ollama_max_loaded_models (memory permitting) and "
        "run make setup, or serve fewer models."
    )


def release_served_models(tags_reply: dict[str, Any] | None) -> list[dict[str, str]]:
    """The models a release serves, with Ollama's digests, from its own GET /api/tags (ansible.builtin.uri's result):
    the service lists only its configured models, as Ollama reports them (https://docs.ollama.com/api/tags)."""
    listed = ((tags_reply or {}).get("json") or {}).get("models") or []
    return [{"name": m.get("name", ""), "digest": m.get("digest", "")} for m in listed if isinstance(m, dict)]


def release_models_changed(recorded: list[dict[str, Any]] | None, current: list[dict[str, Any]] | None) -> list[str]:
    """Each model whose Ollama digest differs from the one its release was recorded with (someone ran `ollama pull` on
    the Mac, or removed it), as a sentence. Records without models (older lines) say nothing."""
    now = {_tagged(m["name"]): m.get("digest", "") for m in current or []}
    changes = []
    for model in recorded or []:
        name, was = _tagged(model["name"]), model.get("digest", "")
        if name not in now or not now[name]:
            changes.append(f"{name} is gone from Ollama (the release served {was[:12] or 'it'})")
        elif was and now[name] != was:
            changes.append(f"{name} changed under the release: digest {was[:12]} then, {now[name][:12]} now")
    return changes


def release_models_changes(
    envs: list[str], last_successes: dict[str, dict[str, Any]], tags_replies: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """{env: changes} for each environment whose models changed since its last successful release was recorded; a
    stack that does not answer /api/tags is left to the health report."""
    changes = {}
    for env, reply in zip(envs, tags_replies, strict=True):
        if int((reply or {}).get("status", -1)) != 200:
            continue
        recorded = (last_successes.get(env) or {}).get("models") or []
        found = release_models_changed(recorded, release_served_models(reply))
        if found:
            changes[env] = found
    return changes


class FilterModule:
    def filters(self):
        return {
            name: function for name, function in globals().items() if name.startswith("release_") and callable(function)
        }
