#!/usr/bin/env bash
# Linters beyond ruff; each line is owned by the part of the repo it checks. Run by `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
