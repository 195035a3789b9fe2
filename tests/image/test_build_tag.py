"""How scripts/build-push.sh names a build (`--tag-only`: no Docker needed), on a private clone of the repository.

A committed build context gets the commit's tag; anything uncommitted in the context, or a BUILD_VARIANT, gets a
content hash instead, so an image built from edits can never take a commit's (immutable) tag.
"""

from __future__ import annotations

import shutil

import pytest

from tests.image.conftest import ROOT, TAG_RE, run


@pytest.fixture
def clone(tmp_path):
    path = tmp_path / "repo"
    run("git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(path))
    # The script under test is this checkout's (scripts/ is outside the build context: it does not move the tag).
    shutil.copy2(ROOT / "scripts" / "build-push.sh", path / "scripts" / "build-push.sh")
    return path


def tag(repo, **env: str) -> str:
    result = run("bash", "scripts/build-push.sh", "--tag-only", cwd=repo, env={"BUILD_VARIANT": "", **env})
    value = result.stdout.strip()
    assert TAG_RE.match(value), value
    return value


def test_clean_context_uses_the_commit(clone):
    head = run("git", "rev-parse", "--short=7", "HEAD", cwd=clone).stdout.strip()
    assert tag(clone) == f"sha-{head}"


def test_edits_outside_the_context_keep_the_commit_tag(clone):
    before = tag(clone)
    (clone / "README.md").write_text("edited\n")
    assert tag(clone) == before


def test_uncommitted_context_edits_get_a_stable_content_hash(clone):
    commit_tag = tag(clone)
    main = clone / "service" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# edit\n")
    dirty = tag(clone)
    assert dirty != commit_tag and len(dirty) == len("sha-") + 12
    assert tag(clone) == dirty  # same content, same tag
    main.write_text(main.read_text() + "# another edit\n")
    assert tag(clone) != dirty
    (clone / "service" / "app" / "new_module.py").write_text("X = 1\n")  # untracked files count too
    assert tag(clone) not in (dirty, commit_tag)


def test_variant_gives_a_distinct_tag(clone):
    plain = tag(clone)
    one, two = tag(clone, BUILD_VARIANT="one"), tag(clone, BUILD_VARIANT="two")
    assert len({plain, one, two}) == 3
    assert tag(clone, BUILD_VARIANT="one") == one
