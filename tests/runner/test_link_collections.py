"""scripts/link_collections.py: the playbooks see exactly the collections of ansible/requirements.yml, linked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import link_collections

ROOT = Path(__file__).resolve().parents[2]


def requirements(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "requirements.yml"
    path.write_text(json.dumps({"collections": entries}))  # JSON is YAML
    return path


def test_links_each_pinned_collection_to_the_installed_one(tmp_path: Path) -> None:
    source, version = link_collections.installed("community.docker")
    reqs = requirements(tmp_path, [{"name": "community.docker", "version": version}])

    (target,) = link_collections.link(tmp_path / "collections", reqs)
    assert target == tmp_path / "collections" / "ansible_collections" / "community" / "docker"
    assert target.is_symlink() and target.resolve() == source.resolve()
    assert (target / "plugins" / "modules" / "docker_compose_v2.py").is_file()
    # Again (make venv after a requirements change): the link is replaced, not nested inside the old one.
    link_collections.link(tmp_path / "collections", reqs)
    assert target.resolve() == source.resolve() and not (source / "docker").exists()


def test_a_version_other_than_the_pinned_one_is_refused_by_name(tmp_path: Path) -> None:
    reqs = requirements(tmp_path, [{"name": "community.docker", "version": "0.0.1"}])
    with pytest.raises(link_collections.LinkError, match=r"pins community\.docker 0\.0\.1, but \d+\.\d+\.\d+ is"):
        link_collections.link(tmp_path / "collections", reqs)
    assert not (tmp_path / "collections").exists()


def test_a_collection_that_is_not_installed_is_refused_by_name(tmp_path: Path) -> None:
    reqs = requirements(tmp_path, [{"name": "nobody.nothing", "version": "1.0.0"}])
    with pytest.raises(link_collections.LinkError, match=r"collection nobody\.nothing is not installed"):
        link_collections.link(tmp_path / "collections", reqs)


def test_the_project_requirements_are_what_the_venv_has() -> None:
    for fqcn, version in link_collections.wanted().items():
        assert link_collections.installed(fqcn)[1] == version, fqcn


def test_ansible_cfg_sees_only_the_linked_collections() -> None:
    # What ansible-playbook itself would list with the project's ansible.cfg (make venv made the links).
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg")}
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    listed = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-galaxy")), "collection", "list", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = {name for collections in json.loads(listed.stdout).values() for name in collections}
    assert set(link_collections.wanted()) <= found
    # ansible-core's own internal collection (ansible._protomatter) aside, nothing of the ~100 the `ansible` package
    # installs.
    assert {name for name in found if not name.startswith("ansible._")} == set(link_collections.wanted())
