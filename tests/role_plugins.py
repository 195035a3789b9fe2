"""The Python code of the Ansible roles (filter plugins and modules), imported by the tests as the roles load it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROLES = Path(__file__).resolve().parents[1] / "ansible" / "roles"


def role_plugin(path: str) -> ModuleType:
    """`role_plugin("release/filter_plugins/release.py")`: the module at that path under ansible/roles."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROLES / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
