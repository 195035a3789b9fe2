#!/bin/sh
# Build stage only (Dockerfile): drop the debug info some wheels ship in their compiled modules, then import every
# compiled module so that a damaged file fails the build instead of the container's start.
#
# Why: uvloop's loop.so is 13 MB with DWARF debug info and 1.6 MB without; httptools, aiohttp, multidict,
# frozenlist and propcache carry it too. Nothing reads it at run time, and it was ~20 MB of the image.
# Only files that have a .debug_info section are touched, and `strip --strip-debug` keeps their symbol and dynamic
# sections. Needs binutils (readelf, strip), which only the build stage installs.
#   usage: slim-venv.sh /opt/venv
set -eu
venv=$1

find "$venv" -name '*.so' -type f | while read -r so; do
    if readelf -S "$so" | grep -q '\.debug_info'; then
        strip --strip-debug "$so"
    fi
done

"$venv/bin/python" - "$venv" <<'PY'
import importlib
import sys
from pathlib import Path

site = next(Path(sys.argv[1]).glob("lib/python3*/site-packages"))
for so in sorted(site.rglob("*.so")):
    rel = so.relative_to(site)
    if any(part.endswith(".libs") for part in rel.parts):  # vendored C libraries (auditwheel), not modules
        continue
    module = ".".join((*rel.parts[:-1], rel.name.split(".", 1)[0]))
    importlib.import_module(module)
print(f"slim-venv: every compiled module under {site} imports")
PY
