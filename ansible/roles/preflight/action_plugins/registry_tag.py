"""Action `registry_tag`: does the registry have repository:tag? (tasks/registry_tag.yml, one task)

HEAD /v2/<name>/manifests/<tag> (https://distribution.github.io/distribution/spec/api/#existing-manifests). Plain
registries (the testbed's htpasswd registry) accept basic auth directly; ghcr.io and Docker Hub answer 401 with
`WWW-Authenticate: Bearer realm=...,service=...,scope=...`, so a pull token is fetched from that realm with the same
credentials and the manifest asked again (https://distribution.github.io/distribution/spec/auth/token/). Each request
is an ansible.builtin.uri call on the host, as the tasks this replaces made. One task instead of five: a run's time is
mostly its number of task results (make bench-deploy). The task is no_log (its arguments carry the credentials); the
result holds only found, status and detail. Never fails by itself: the caller asserts, with the detail.

bearer_challenge(www_authenticate)          the challenge's parameters, or None when it is not a Bearer challenge
token_url(challenge, image_path)            where to ask for a pull token
registry_detail(status, message, url)       what the answer means, for messages (no credentials in it)
All three are unit-tested in tests/unit/test_deploy_plan.py.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from ansible.plugins.action import ActionBase

CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
CREDENTIALS_IN_URL = re.compile(r"://[^@/]*@")


def bearer_challenge(www_authenticate: str | None) -> dict[str, str] | None:
    header = www_authenticate or ""
    if not header.lower().startswith("bearer "):
        return None
    return dict(CHALLENGE_PARAM.findall(header))


def token_url(challenge: dict[str, str], image_path: str) -> str:
    service = quote(challenge.get("service", ""), safe="/")
    scope = quote(f"repository:{image_path}:pull", safe="/")
    return f"{challenge['realm']}?service={service}&scope={scope}"


def registry_detail(status: int, message: str, registry_url: str) -> str:
    if status == 200:
        return "present"
    if status == 401:
        return "credentials rejected (HTTP 401)"
    if status == 404:
        return "no such tag (HTTP 404)"
    return f"registry {registry_url} did not answer: {CREDENTIALS_IN_URL.sub('://***@', message or '')}"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True
    _VALID_ARGS = frozenset(("registry_url", "image_path", "tag", "accept", "timeout", "username", "password"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        manifest_url = f"{args['registry_url']}/v2/{args['image_path']}/manifests/{args['tag']}"
        basic = {"url_username": args["username"], "url_password": args["password"], "force_basic_auth": True}
        head = {"method": "HEAD", "headers": {"Accept": args["accept"]}, "status_code": [200, 401, 404]}

        reply = self._uri(task_vars, url=manifest_url, **basic, **head)
        challenge = bearer_challenge(reply.get("www_authenticate"))
        if reply.get("status") == 401 and challenge and challenge.get("realm"):
            token = self._uri(task_vars, url=token_url(challenge, args["image_path"]), return_content=True, **basic)
            if token.get("status") == 200:
                body = token.get("json") or {}
                bearer = {"Authorization": f"Bearer {body.get('token') or body.get('access_token', '')}"}
                reply = self._uri(task_vars, url=manifest_url, **{**head, "headers": {**head["headers"], **bearer}})
            else:
                reply = token
        status = int(reply.get("status", -1))
        detail = registry_detail(status, reply.get("msg", ""), args["registry_url"])
        result.update(changed=False, found=status == 200, status=status, detail=detail)
        return result

    def _uri(self, task_vars: dict, **module_args: Any) -> dict:
        module_args.setdefault("status_code", [200])
        module_args["timeout"] = int(self._task.args["timeout"])
        return self._execute_module("ansible.builtin.uri", module_args=module_args, task_vars=task_vars)
