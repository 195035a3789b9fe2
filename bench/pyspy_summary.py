"""Where the CPU goes, by library, from a py-spy `--format raw` file (collapsed stacks: `frame;frame;... count`).

`python bench/pyspy_summary.py STACKS` (bench/service.py --profile calls it). Frames are `function (file:line)`;
a frame's library is its top-level package or module (`service/app` for the service's own code). The frames of
uvicorn's start-up and the asyncio runner, under which uvloop calls everything, are dropped first, so "inclusive"
means: samples in which that library's code was on the stack; a sample with nothing left is the loop's C code.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# The frames under which uvloop runs every callback: uvicorn's start-up and the asyncio runner. A sample that is
# nothing but these is time in the loop's own C code (uvloop, httptools' parser, the socket syscalls).
_RUNNER = ("<frozen runpy>", "click/", "uvicorn/main.py", "uvicorn/__main__.py", "uvicorn/_compat.py",
           "uvicorn/server.py", "asyncio/runners.py", "asyncio/base_events.py", "uvloop/__init__.py")  # fmt: skip
LOOP = "event loop C code (uvloop, httptools, syscalls)"


def _file(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    return match.group("file") if match else frame


def library(frame: str) -> str:
    """py-spy names files relative to their sys.path entry: the first component is the package (or module)."""
    path = _file(frame)
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    top = path.split("/", 1)[0].removesuffix(".py")
    return "service/app" if top == "app" else top


def read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def summarize(stacks: list[tuple[list[str], int]]) -> tuple[int, Counter, Counter, Counter]:
    """(samples, inclusive by library, self by library, self by function), runner frames dropped."""
    total = sum(n for _, n in stacks)
    inclusive: Counter = Counter()
    own: Counter = Counter()
    functions: Counter = Counter()
    for frames, n in stacks:
        below = list(frames)
        while below and _file(below[0]).startswith(_RUNNER):
            below.pop(0)
        if not below:
            inclusive[LOOP] += n
            own[LOOP] += n
            functions[LOOP] += n
            continue
        for lib in {library(f) for f in below}:
            inclusive[lib] += n
        own[library(below[-1])] += n
        functions[below[-1].strip()] += n
    return total, inclusive, own, functions


def print_summary(path: Path, top: int = 12) -> None:
    total, inclusive, own, functions = summarize(read(path))
    if not total:
        print("no samples")
        return
    print(f"{total} samples\n")
    print("| library | inclusive | self |\n|---|---|---|")
    for lib, n in inclusive.most_common(top):
        print(f"| {lib} | {n / total:.0%} | {own[lib] / total:.0%} |")
    print("\n| function (self) | share |\n|---|---|")
    for func, n in functions.most_common(top):
        print(f"| `{func}` | {n / total:.1%} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/pyspy_summary.py STACKS (py-spy record --format raw)")
    print_summary(Path(sys.argv[1]))
