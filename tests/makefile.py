"""The Makefile's targets, for the tests that check what names them (the workflows, the docs)."""

from __future__ import annotations

import re
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def make_targets() -> set[str]:
    """Every explicit rule's name (`name: ...`), not variable assignments (`NAME := ...`)."""
    return set(re.findall(r"^([a-zA-Z0-9_.-]+):(?!=)", MAKEFILE.read_text(), flags=re.M))
