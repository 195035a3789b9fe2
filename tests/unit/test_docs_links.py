"""The docs point only at things that exist: every relative link resolves (and its #anchor names a heading of the
file it points to), and every `make` command names targets the Makefile has.

The docs are README.md, docs/ and the READMEs beside the code. They are read with markdown-it-py, a CommonMark
parser, so a link is what GitHub renders as one (not text inside code), and code is what it renders as code. The
docs write commands as code (`make deploy ENV=staging`, or a code block), so that is where `make` is read: every
occurrence of the word in a code span or block starts a command, whose words up to a shell operator or a comment
are options, VAR=value assignments or targets.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from tests.makefile import make_targets

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    {
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("bench/*.md"),
        ROOT / "service" / "README.md",
        *ROOT.glob("ansible/roles/*/README.md"),
    }
)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, http:, mailto:, ...
MAKE_CALL = re.compile(r"(?<![\w./-])make[ \t]+")
SHELL_STOP = set("();<>|&") | {"&&", "||", ";;", ">>", "<<"}  # what shlex's punctuation_chars returns apart
TARGET_SHAPE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_.-]*$")


def parse(text: str) -> list[Token]:
    """Block tokens, each inline one with its children (links, code spans, text), as GitHub's CommonMark + tables."""
    return MarkdownIt("commonmark").enable("table").parse(text)


@cache
def tokens(path: Path) -> list[Token]:
    return parse(path.read_text())


def inline_children(blocks: list[Token]):
    for token in blocks:
        yield from token.children or []


def links(blocks: list[Token]) -> list[str]:
    found = []
    for child in inline_children(blocks):
        if child.type == "link_open":
            found.append(str(child.attrs["href"]))
        elif child.type == "image":
            found.append(str(child.attrs["src"]))
    return found


def code(blocks: list[Token]) -> list[str]:
    """The text of every code block and code span."""
    found = [t.content for t in blocks if t.type in ("fence", "code_block")]
    return found + [c.content for c in inline_children(blocks) if c.type == "code_inline"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation other than - and _ dropped, spaces to hyphens."""
    kept = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the file's headings; a repeated heading's anchor gets -1, -2, ..."""
    found: set[str] = set()
    blocks = tokens(path)
    for opening, inline in zip(blocks, blocks[1:], strict=False):
        if opening.type != "heading_open":
            continue
        text = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
        base = anchor = slug(text)
        n = 0
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


def broken_link(doc: Path, href: str, root: Path = ROOT) -> str | None:
    """Why a link does not resolve, or None when it does (external links are not fetched)."""
    if EXTERNAL.match(href):
        return None
    target, _, fragment = href.partition("#")
    path = (doc.parent / unquote(target)).resolve() if target else doc
    if not path.is_relative_to(root):
        return f"{href}: outside the repository"
    if not path.exists():
        return f"{href}: no such file or directory"
    if fragment and path.suffix == ".md" and fragment not in anchors(path):
        return f"{href}: {path.relative_to(root)} has no heading with the anchor #{fragment}"
    return None


def make_calls(text: str) -> list[str]:
    """The targets named by each `make ...` in a piece of code."""
    named = []
    for line in text.splitlines():
        for match in MAKE_CALL.finditer(line):
            named += command_targets(line[match.end() :])
    return named


def command_targets(arguments: str) -> list[str]:
    """The targets among one make command's words, read as the shell would up to an operator or a comment."""
    words = shlex.shlex(arguments, posix=True, punctuation_chars=True)
    words.whitespace_split = True
    targets = []
    try:
        for word in words:
            if word in SHELL_STOP:
                break
            if word.startswith("-") or "=" in word or not TARGET_SHAPE.match(word):
                continue  # an option, VAR=value, or a placeholder such as ... or [IMAGE_TAG=...]
            targets.append(word)
    except ValueError:  # an unbalanced quote past the command, e.g. an apostrophe in the comment after it
        pass
    return targets


def test_the_docs_are_found():
    names = {str(p.relative_to(ROOT)) for p in DOCS}
    assert {"README.md", "docs/runbook.md", "docs/deploy.md", "service/README.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = [why for href in links(tokens(doc)) if (why := broken_link(doc, href))]
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_make_commands_name_targets(doc):
    targets = make_targets()
    unknown = sorted({t for snippet in code(tokens(doc)) for t in make_calls(snippet)} - targets)
    assert not unknown, f"{doc.relative_to(ROOT)} names make targets the Makefile lacks: {unknown}"


def test_the_readers_find_what_github_renders(tmp_path):
    """Links and code are what the parser says they are: prose is neither, a link's #anchor is checked."""
    guide = tmp_path / "docs" / "guide.md"
    guide.parent.mkdir()
    guide.write_text("# The service (`make bench-service`)\n\n## Deploy, verify, roll back\n\n## Notes\n\n## Notes\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [the guide](docs/guide.md#deploy-verify-roll-back) and [x](https://example.com).\n"
        "To make it work, run `make deploy ENV=staging IMAGE_TAG=sha-1` (see `make -n`).\n\n"
        "```sh\nmake demo    # then: make demo-down; don't forget\nmake lint && make bench-service ARGS='-x'\n```\n"
    )
    blocks = parse(readme.read_text())
    assert links(blocks) == ["docs/guide.md#deploy-verify-roll-back", "https://example.com"]
    assert [t for snippet in code(blocks) for t in make_calls(snippet)] == [
        "demo",
        "demo-down",
        "lint",
        "bench-service",
        "deploy",
    ]
    assert anchors(guide) == {"the-service-make-bench-service", "deploy-verify-roll-back", "notes", "notes-1"}
    assert broken_link(readme, "docs/guide.md#deploy-verify-roll-back", root=tmp_path) is None
    assert broken_link(readme, "https://example.com/nowhere", root=tmp_path) is None
    assert "no heading" in broken_link(readme, "docs/guide.md#notes-2", root=tmp_path)
    assert "no such file" in broken_link(readme, "docs/other.md", root=tmp_path)
    assert "outside" in broken_link(readme, "../elsewhere.md", root=tmp_path)


def test_a_make_command_ends_where_the_shell_would_end_it():
    assert command_targets("verify ENV=<env>") == ["verify"]
    assert command_targets("setup ENV=staging|production   # once per Mac") == ["setup"]
    assert command_targets("rollback ENV=<env> [IMAGE_TAG=sha-…] ... && echo done") == ["rollback"]
    assert command_targets("-n deploy test-unit; make_believe") == ["deploy", "test-unit"]
