"""What is wrong with a run's inputs, each problem as the message that says how to fix it (tested in
tests/unit/test_deploy_plan.py).

    app_env | preflight_problems(environments, image_repository, tag, mode, tag_pattern, channel_tags)
        [] when the run may go on
"""

from __future__ import annotations

import re
from typing import Any

# registry host[:port]/path, the shape `docker pull` accepts for a repository (lower case, no tag).
REPOSITORY = re.compile(r"^[a-z0-9.:-]+/[a-z0-9._/-]+$")


def preflight_problems(
    app_env: Any,
    environments: dict[str, Any],
    image_repository: Any,
    tag: Any,
    mode: str,
    tag_pattern: str,
    channel_tags: list[str],
) -> list[str]:
    problems = []
    if not isinstance(app_env, str) or app_env not in environments:
        problems.append(
            f"app_env must be one of {', '.join(environments)}, got '{app_env}'. The staging/production inventories"
            " set it; with inventories/local pass -e app_env=staging|production."
        )
    if not isinstance(image_repository, str) or not REPOSITORY.match(image_repository):
        problems.append("image_repository must be set in the inventory (e.g. ghcr.io/<owner>/local-llm-server).")
    tag = tag if isinstance(tag, str) else ""
    # A rollback may leave the tag out (the history chooses it); a tag given is checked all the same.
    if (mode == "deploy" or tag) and not (re.search(tag_pattern, tag) or tag in channel_tags):
        channels = f" or be one of {', '.join(channel_tags)}" if channel_tags else ""
        problems.append(
            f"image_tag must match {tag_pattern}{channels}; got '{tag or '(not given)'}'. Pass -e "
            "image_tag=sha-<commit> (the tag CI pushed)."
        )
    return problems


class FilterModule:
    def filters(self):
        return {"preflight_problems": preflight_problems}
