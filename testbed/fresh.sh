#!/usr/bin/env bash
# Make this machine look brand-new to the testbed, then (with --run) rehearse CI on it: `bash .ci/run` in a fresh
# clone, timed. A green run on a machine where an earlier testbed left a user, an engine or caches proves less than
# one on a new machine (docs/testing.md, "Rehearse a fresh machine").
#
#   bash testbed/fresh.sh [--packages] [--run]
#
# What goes, in order:
#   1. `testbed/down.sh --purge` in this checkout: what its up.sh started, its state and its caches;
#   2. the Docker engine, stopped (a dockerd, or systemd's docker unit), and its whole state (/var/lib/docker: every
#      container, image and network, so the stacks, the base images and the build cache too);
#   3. the deploy user and the admin account with their homes (or what is left of them), whoever made them, and their
#      sudoers drop-ins;
#   4. the Compose plugin copies;
#   5. with --packages, the Debian packages up.sh installs (and what only they needed), so its apt-get branch runs.
# Root only, and meant for a machine that runs this project's testbed: step 2 removes every container and image.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USER_NAME=deploy
ADMIN_NAME=llm-admin # the Mac's admin account up.sh makes for make setup
# shellcheck source=testbed/packages.sh
source "$ROOT/testbed/packages.sh"
PACKAGES=("$TESTBED_ENGINE_PACKAGE" "${TESTBED_PACKAGES[@]}")
packages=0
run=0
for arg in "$@"; do
    case $arg in
    --packages) packages=1 ;;
    --run) run=1 ;;
    *)
        echo "usage: bash testbed/fresh.sh [--packages] [--run]" >&2
        exit 2
        ;;
    esac
done
[[ $EUID -eq 0 ]] || {
    echo "fresh.sh: run as root (it stops the Docker engine, removes a user and may purge packages)" >&2
    exit 1
}
log() { printf '[fresh] %s\n' "$*"; }

bash "$ROOT/testbed/down.sh" --purge

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker 2>/dev/null; then
    systemctl stop docker docker.socket
    log "stopped systemd's docker"
fi
if pkill -TERM -x dockerd; then
    for _ in $(seq 1 300); do pgrep -x dockerd >/dev/null || break; sleep 0.1; done
    pkill -KILL -x dockerd 2>/dev/null || true
    log "stopped dockerd"
fi
if [[ -d /var/lib/docker ]]; then
    # Mounts of stopped containers can linger (overlay, shm); unmount them before removing their directories.
    grep -o ' /var/lib/docker/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    # Its contents, not the directory: on some machines /var/lib/docker is a mount point of its own (rm says
    # "Device or resource busy"), as it may be on a new one.
    find /var/lib/docker -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    log "removed the Docker engine's state (the contents of /var/lib/docker)"
fi

for name in "$USER_NAME" "$ADMIN_NAME"; do
    home=$(getent passwd "$name" | cut -d: -f6 || true)
    if [[ -n $home ]]; then
        pkill -KILL -u "$name" 2>/dev/null || true
        userdel --remove "$name" 2>/dev/null || true
        id "$name" >/dev/null 2>&1 && userdel "$name"
        log "removed user $name"
    fi
    home=${home:-/home/$name}
    if [[ -e $home ]]; then
        rm -rf "$home"
        log "removed $home"
    fi
done
rm -f /etc/sudoers.d/local-llm-server-testbed /etc/sudoers.d/local-llm-server

rm -f "$HOME/.docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose

if ((packages)); then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${PACKAGES[@]}" >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -qq >/dev/null
    log "purged ${PACKAGES[*]} and what only they needed"
fi
log "this machine now looks new to the testbed"

if ((run)); then
    clone=$(mktemp -d)/local-llm-server
    git clone -q "$ROOT" "$clone"
    log "bash .ci/run in a fresh clone of $(git -C "$ROOT" rev-parse --short HEAD): $clone"
    start=$SECONDS
    status=0
    (cd "$clone" && bash .ci/run) || status=$?
    log "bash .ci/run exited $status after $(((SECONDS - start) / 60)) min $(((SECONDS - start) % 60)) s"
    exit "$status"
fi
