"""`make venv`: link the collections the playbooks use (ansible/requirements.yml) where ansible.cfg looks for them.

The PyPI package `ansible` installs about a hundred collections into site-packages; the playbooks use one. So that
the plays see exactly the collections ansible/requirements.yml names, at the versions it pins (a newer one the
`ansible` package brings cannot slip in unnoticed), ansible.cfg sets `collections_scan_sys_path = False` and a
`collections_path` that holds only links to those (a version mismatch fails here, by name).

    python -m scripts.link_collections     # run with ANSIBLE_CONFIG=ansible/ansible.cfg (the Makefile exports it)
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "ansible" / "requirements.yml"


class LinkError(Exception):
    pass


def wanted(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """{"namespace.name": "version"} from a galaxy requirements file."""
    data = yaml.safe_load(requirements.read_text()) or {}
    collections = data.get("collections") or []
    if not collections:
        raise LinkError(f"{requirements} lists no collections")
    return {entry["name"]: str(entry["version"]) for entry in collections}


def installed(fqcn: str) -> tuple[Path, str]:
    """Where the Python environment (the `ansible` package) has a collection, and its version (MANIFEST.json)."""
    try:
        spec = importlib.util.find_spec(f"ansible_collections.{fqcn}")
    except ModuleNotFoundError:  # the namespace is missing too
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LinkError(f"collection {fqcn} is not installed in {sys.prefix} (requirements-dev.txt: ansible)")
    path = Path(next(iter(spec.submodule_search_locations)))
    manifest = json.loads((path / "MANIFEST.json").read_text())
    return path, manifest["collection_info"]["version"]


def collections_dir() -> Path:
    """The first entry of ansible.cfg's collections_path (Ansible's own reading of ANSIBLE_CONFIG)."""
    from ansible import constants  # after ANSIBLE_CONFIG is in the environment

    if constants.COLLECTIONS_SCAN_SYS_PATH:
        raise LinkError("collections_scan_sys_path is on: is ANSIBLE_CONFIG=ansible/ansible.cfg exported?")
    return Path(constants.COLLECTIONS_PATHS[0])


def link(destination: Path, requirements: Path = REQUIREMENTS) -> list[Path]:
    """Make destination/ansible_collections/<namespace>/<name> a link to each wanted collection; return the links."""
    links = []
    for fqcn, version in wanted(requirements).items():
        source, found = installed(fqcn)
        if found != version:
            raise LinkError(f"{requirements} pins {fqcn} {version}, but {found} is installed ({source})")
        namespace, name = fqcn.split(".")
        target = destination / "ansible_collections" / namespace / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(source, target_is_directory=True)
        links.append(target)
    return links


def main() -> None:
    try:
        for target in link(collections_dir()):
            print(f"link_collections: {target} -> {os.readlink(target)}")
    except LinkError as exc:
        sys.exit(f"link_collections: {exc}")


if __name__ == "__main__":
    main()
