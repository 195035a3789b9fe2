"""lookup('llm_environments'): the repository's table of environments, environments.yml at its root.

The file sits outside the roles so that the testbed, the tests, the benchmarks and the demo read the same table;
the path is resolved from this file, so it does not depend on the playbook, the inventory or molecule's copies.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

TABLE = Path(__file__).resolve().parents[4] / "environments.yml"

DOCUMENTATION = """
name: llm_environments
short_description: The repository's table of environments (environments.yml)
description: Returns the parsed environments.yml (keys environments and colors) at the repository's root.
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        try:
            table = yaml.safe_load(TABLE.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise AnsibleLookupError(f"cannot read the table of environments {TABLE}: {exc}") from exc
        return [table]
