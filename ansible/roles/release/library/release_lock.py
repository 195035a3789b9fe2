#!/usr/bin/python
"""Ansible module: a per-environment deploy lock on the host, taken with an atomic mkdir.

Why a module: the lock must be atomic (mkdir succeeds for exactly one caller), must wait with a deadline, must
break a stale lock, and must name its holder when it gives up: stateful logic that belongs in tested Python. It runs
on the host (the Mac's /usr/bin/python3 is Command Line Tools' 3.9), so it stays 3.9-compatible.
Lessons from Kamal (basecamp/kamal lib/kamal/commands/lock.rb: `mkdir` plus a details file): a lock needs an owner
and an expiry; a cancelled CI run can leave one stuck for weeks.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: release_lock
short_description: Take or release a per-environment deploy lock (atomic mkdir + holder file)
description:
  - C(state=acquired) creates the directory I(path) atomically and writes C(holder.json) into it.
    While another holder has it, waits up to I(wait) seconds, then fails naming the holder.
    A lock older than I(stale_after) seconds, or whose holder is listed in I(dead_holders), is broken with a warning.
  - C(state=released) removes the lock if I(holder_id) holds it (never someone else's).
  - Reports changed=false: the lock is transient bookkeeping, taken and released in the same run.
options:
  path: {description: Lock directory, e.g. ~/local-llm-server/state/locks/staging.lock, required: true, type: path}
  state: {description: acquired or released, choices: [acquired, released], default: acquired, type: str}
  holder: {description: Holder details written to holder.json (id, actor, tag, ...), type: dict, default: {}}
  holder_id: {description: Unique id of this run, required: true, type: str}
  wait: {description: Seconds to wait for a held lock, type: int, default: 0}
  poll: {description: Seconds between attempts, type: float, default: 1.0}
  stale_after: {description: Age in seconds after which a lock is broken, type: int, default: 900}
  dead_holders:
    description: Holder ids known to be dead (their lock is broken at once)
    type: list
    elements: str
    default: []
author: local-llm-server
"""

EXAMPLES = r"""
- name: Take the deploy lock
  release_lock:
    path: /Users/deploy/local-llm-server/state/locks/staging.lock
    holder_id: "laptop:4242"
    holder: {actor: alice@laptop, tag: sha-abc1234, env: staging}
    wait: 120
  register: release_lock_taken

- name: Release the deploy lock
  release_lock:
    path: /Users/deploy/local-llm-server/state/locks/staging.lock
    state: released
    holder_id: "laptop:4242"
"""

RETURN = r"""
holder:
  description: The holder's details as written to holder.json (acquired), or the other holder's (released, not ours).
  returned: when acquired, or when the lock is someone else's
  type: dict
waited_for:
  description: The holder this run waited for before it got the lock, or null when it did not wait.
  returned: when acquired
  type: str
released:
  description: Whether this run removed the lock.
  returned: when released
  type: bool
"""

HOLDER_FILE = "holder.json"


def read_holder(path: str) -> dict:
    try:
        with open(os.path.join(path, HOLDER_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        # mkdir happened but the holder file is not written yet (or is torn): age comes from the directory.
        return {}


def lock_age(path: str, holder: dict) -> float:
    started = holder.get("since_epoch")
    if not isinstance(started, (int, float)):
        try:
            started = os.stat(path).st_mtime
        except OSError:
            return 0.0
    return max(0.0, time.time() - started)


def describe(holder: dict) -> str:
    if not holder:
        return "an unknown holder (no holder.json)"
    return "{actor} (run {id}, tag {tag}, since {since})".format(
        actor=holder.get("actor", "?"),
        id=holder.get("id", "?"),
        tag=holder.get("tag", "?"),
        since=holder.get("since", "?"),
    )


def acquire(module: AnsibleModule) -> dict:
    path = module.params["path"]
    holder_id = module.params["holder_id"]
    deadline = time.monotonic() + module.params["wait"]
    warnings: list[str] = []
    waited_for = None
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    while True:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            holder = read_holder(path)
            if holder.get("id") == holder_id:
                return {"changed": False, "holder": holder, "warnings": warnings, "waited_for": waited_for}
            age = lock_age(path, holder)
            dead = holder.get("id") in module.params["dead_holders"]
            if dead or age > module.params["stale_after"]:
                reason = "its holder is gone" if dead else f"it is {int(age)} s old"
                warnings.append(f"Broke the deploy lock {path} held by {describe(holder)}: {reason}.")
                shutil.rmtree(path, ignore_errors=True)
                continue
            waited_for = describe(holder)
            if time.monotonic() >= deadline:
                module.fail_json(
                    msg=f"Another deploy holds {path}: {describe(holder)}; waited {module.params['wait']} s. "
                    "Retry when it has finished, or remove the directory if you know that run is dead.",
                    holder=holder,
                )
            time.sleep(module.params["poll"])
            continue
        holder = dict(module.params["holder"], id=holder_id, since_epoch=time.time())
        holder.setdefault("since", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        tmp = os.path.join(path, HOLDER_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(holder, handle)
        os.replace(tmp, os.path.join(path, HOLDER_FILE))
        return {"changed": False, "holder": holder, "warnings": warnings, "waited_for": waited_for}


def release(module: AnsibleModule) -> dict:
    path = module.params["path"]
    holder = read_holder(path)
    if not os.path.isdir(path):
        return {"changed": False, "released": False}
    if holder.get("id") != module.params["holder_id"]:
        # Not ours (e.g. ours was broken as stale and someone else took it): leave it alone.
        return {"changed": False, "released": False, "holder": holder}
    shutil.rmtree(path)
    return {"changed": False, "released": True}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "default": "acquired", "choices": ["acquired", "released"]},
            "holder": {"type": "dict", "default": {}},
            "holder_id": {"type": "str", "required": True},
            "wait": {"type": "int", "default": 0},
            "poll": {"type": "float", "default": 1.0},
            "stale_after": {"type": "int", "default": 900},
            "dead_holders": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=False,
    )
    result = acquire(module) if module.params["state"] == "acquired" else release(module)
    warnings = result.pop("warnings", [])
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
