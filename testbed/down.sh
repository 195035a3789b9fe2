#!/usr/bin/env bash
# Stop and remove exactly what testbed/up.sh created (make testbed-down), as listed in .testbed/manifest,
# newest first: its processes (by pid file, checked against the expected command line), the deploy user with its
# home and every stack deployed from that home (said in the output), the Compose plugin copies it installed, and
# the state under .testbed/ (registry data, keys, configs, logs).
#
# Kept as caches unless --purge: the debootstrap base image, the images derived from it (build stage with binutils,
# nginx proxy) and the wheelhouse
# (re-making them takes a minute or two and needs the network). Debian packages stay installed. Processes and
# containers that up.sh found already running (a Docker engine, a real Ollama) are left alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TB=$(realpath -m "$ROOT/.testbed") # a symlink lets a second worktree share one testbed
RUN="$TB/run"
MANIFEST="$TB/manifest"
PURGE=0
[[ ${1:-} == --purge ]] && PURGE=1

log() { printf '[testbed] %s\n' "$*"; }

if [[ ! -f $MANIFEST ]]; then
    log "nothing to do: no $MANIFEST"
    exit 0
fi

# What each recorded process's command line must contain, so a recycled pid is never signalled.
declare -A MATCH=(
    [dockerd]=dockerd
    [registry]="docker-registry serve"
    [sshd]="sshd"
    [ollama-double]=tests.fakes.ollama
    [ollama-forward]=tcp_forward.py
    [cloudflared-standin]=cloudflared_standin.py
)

stop_proc() { # name
    local name=$1 pidfile="$RUN/$1.pid" pid i
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if ! { [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "${MATCH[$name]:-$name}"; }; then
        log "$name: not running"
        return 0
    fi
    kill "$pid"
    # dockerd stops its containers first; give it time.
    for ((i = 0; i < 300; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "$name: still running after 30 s, sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    log "$name: stopped (pid $pid)"
}

# Remove every container deployed from a directory (its compose project directory or one of its bind mounts lies
# inside it), with each compose project's default network. Prints "projects: ...; containers: ..." when it removed
# any, nothing otherwise. Needs a Docker engine that answers.
remove_containers_under() { # dir
    local names projects project
    mapfile -t names < <(docker ps -aq | xargs -r docker inspect -f \
        '{{.Name}} {{index .Config.Labels "com.docker.compose.project.working_dir"}} {{range .Mounts}}{{.Source}} {{end}}' |
        awk -v dir="$1/" '{ for (i = 2; i <= NF; i++) if (index($i "/", dir) == 1) { print substr($1, 2); break } }')
    ((${#names[@]})) || return 0
    projects=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "${names[@]}" | sort -u |
        paste -sd' ')
    docker rm -f "${names[@]}" >/dev/null
    for project in $projects; do
        docker network rm "${project}_default" >/dev/null 2>&1 || true
    done
    echo "projects: ${projects:-none}; containers: ${names[*]}"
}

# A user's home goes with the user, and with it every stack deployed from it (their compose files, the proxies'
# configs). Remove those stacks first, while the engine still runs: a container left behind would restart-loop on
# its missing bind mount, and Docker would re-create the mount source as root inside the removed home.
remove_stacks_of() { # user
    local home removed
    home=$(getent passwd "$1" | cut -d: -f6)
    [[ -n $home ]] && docker info >/dev/null 2>&1 || return 0
    removed=$(remove_containers_under "$home")
    [[ -z $removed ]] || log "user $1: removed the stacks deployed under $home with it ($removed)"
}

# First, while the engine still runs (down may stop it below): the stacks of each user that goes.
while read -r kind value; do
    if [[ $kind == user ]] && id "$value" >/dev/null 2>&1; then remove_stacks_of "$value"; fi
done <"$MANIFEST"

keep=()
while read -r kind value; do
    case $kind in
    proc) stop_proc "$value" ;;
    user)
        if id "$value" >/dev/null 2>&1; then
            # userdel refuses a user with live processes: SSH sessions into the "Mac Mini" (an ssh ControlPersist
            # master keeps one open for 60 s after ansible-playbook ends). They are the testbed's own: end them.
            pkill -TERM -u "$value" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                pgrep -u "$value" >/dev/null || break
                sleep 0.1
            done
            pkill -KILL -u "$value" 2>/dev/null || true
            home=$(getent passwd "$value" | cut -d: -f6)
            # userdel --remove fails (exit 12) on a home the user does not own entirely, after removing the user.
            userdel --remove "$value" 2>/dev/null || true
            if id "$value" >/dev/null 2>&1; then
                log "user $value: could not remove"
            else
                # The home was made with the user: it goes too, whatever userdel left of it.
                [[ -z $home || ! -d $home ]] || rm -rf "$home"
                log "user $value: removed, with its home $home"
            fi
        fi
        ;;
    file)
        rm -f "$value"
        log "removed $value"
        ;;
    cache-image)
        if ((PURGE)); then
            docker image rm "$value" >/dev/null 2>&1 && log "base image $value: removed" || true
        else
            keep+=("$kind $value")
        fi
        ;;
    cache-dir)
        ((PURGE)) || keep+=("$kind $value")
        ;;
    *) [[ -z $kind ]] || log "manifest: ignoring unknown line '$kind $value'" ;;
    esac
done < <(tac "$MANIFEST")

# Remove the state; keep the caches (and their manifest lines) for the next up.
find "$TB" -mindepth 1 -maxdepth 1 ! -path "$TB/wheelhouse" -exec rm -rf {} +
((PURGE)) && rm -rf "$TB/wheelhouse"
if ((${#keep[@]})); then
    printf '%s\n' "${keep[@]}" >"$MANIFEST"
    log "kept as caches (remove with --purge): ${keep[*]}"
else
    rmdir "$TB" 2>/dev/null || true
fi
log "down"
