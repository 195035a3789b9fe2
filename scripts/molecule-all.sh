#!/usr/bin/env bash
# `make test-molecule`: `molecule test` for every role under ansible/roles that has a scenario, over SSH against
# the testbed (settings: .config/molecule/config.yml). Fails if any scenario fails, or if a converge matched no
# host (a scenario that silently ran against nothing would otherwise "pass").
#
# Exports for the scenarios: REGISTRY_USERNAME / REGISTRY_PASSWORD, MAC_ADMIN_PASSWORD and
# CLOUDFLARED_TUNNEL_CREDENTIALS (from the testbed's 0600 files, into the environment only), MOLECULE_IMAGE_TAG
# (this tree's image, built and pushed by scripts/build-push.sh) and MOLECULE_BASE_IMAGE. Usage: scripts/molecule-all.sh [role ...]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
unset ANSIBLE_CONFIG # molecule writes its own ansible.cfg per scenario

[[ -f .testbed/env ]] || { echo "molecule-all: no .testbed/env; run 'make testbed-up' first" >&2; exit 1; }
# shellcheck disable=SC1091
source .testbed/env
export TESTBED_DIR REGISTRY_USERNAME="$REGISTRY_USER" MOLECULE_BASE_IMAGE="$BASE_IMAGE"
REGISTRY_PASSWORD=$(<"$REGISTRY_PASSWORD_FILE")
export REGISTRY_PASSWORD
# Set-up's secrets, as make setup takes them: the admin account's sudo password and the tunnel's credentials.
MAC_ADMIN_PASSWORD=$(<"$ADMIN_PASSWORD_FILE")
CLOUDFLARED_TUNNEL_CREDENTIALS=$(<"$CLOUDFLARED_CREDENTIALS_FILE")
export MAC_ADMIN_PASSWORD CLOUDFLARED_TUNNEL_CREDENTIALS

echo "[molecule-all] building and pushing this tree's image (scripts/build-push.sh)" >&2
MOLECULE_IMAGE_TAG=$(bash scripts/build-push.sh | sed -n 's/^IMAGE_TAG=//p')
[[ $MOLECULE_IMAGE_TAG =~ ^sha-[0-9a-f]+$ ]] || { echo "molecule-all: build-push printed no IMAGE_TAG" >&2; exit 1; }
export MOLECULE_IMAGE_TAG

if (($#)); then roles=("$@"); else
    roles=()
    for scenario in ansible/roles/*/molecule/default/molecule.yml; do
        roles+=("$(basename "$(dirname "$(dirname "$(dirname "$scenario")")")")")
    done
fi

failed=()
logs=$(mktemp -d)
for role in "${roles[@]}"; do
    start=$SECONDS
    log="$logs/$role.log"
    if (cd "ansible/roles/$role" && molecule test) >"$log" 2>&1 && grep -q 'testbed *: ok=' "$log"; then
        echo "[molecule-all] $role: passed ($((SECONDS - start)) s)" >&2
    else
        # The failed task comes first: molecule's own summary fills the log's tail and would hide it.
        echo "[molecule-all] $role: FAILED ($((SECONDS - start)) s); its failed tasks:" >&2
        sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '
            /TASK \[/ { task = $0 }
            /\[ERROR\]|fatal: \[|failed: \[/ && !shown { print task; shown = 1 }
            /PLAY RECAP/ { shown = 0 }
            shown || /Idempotence test failed|CRITICAL/ { print }' | cut -c1-400 | head -80 >&2
        echo "[molecule-all] last lines of its log:" >&2
        tail -25 "$log" >&2
        failed+=("$role")
    fi
done
rm -rf "$logs"
if ((${#failed[@]})); then
    echo "[molecule-all] failed: ${failed[*]}" >&2
    exit 1
fi
echo "[molecule-all] all ${#roles[@]} scenarios passed" >&2
