#!/usr/bin/env bash
# Writes the deploy SSH key and the pinned known_hosts line(s) from the environment (CI secrets) so that
# ansible-playbook can reach the Mac Mini with host key checking ON. Never echoes either value.
#   DEPLOY_SSH_KEY      private key of the deploy user (OpenSSH format)
#   DEPLOY_KNOWN_HOSTS  known_hosts line(s) for the host, e.g. "mac-mini.tailnet.ts.net ssh-ed25519 AAAA..."
#   SSH_DIR             where to write (default ~/.ssh)
set -euo pipefail
ssh_dir=${SSH_DIR:-$HOME/.ssh}
fail() { echo "ssh-setup: $*" >&2; exit 2; }

[ -n "${DEPLOY_SSH_KEY:-}" ] || fail "DEPLOY_SSH_KEY is empty (set the secret in the GitHub Environment)"
[ -n "${DEPLOY_KNOWN_HOSTS:-}" ] || fail "DEPLOY_KNOWN_HOSTS is empty: pin the host key (ssh-keyscan it once from a trusted network and check its fingerprint)"

install -d -m 0700 "$ssh_dir"
umask 077
key="$ssh_dir/id_ed25519"
printf '%s\n' "$DEPLOY_SSH_KEY" > "$key"
chmod 0600 "$key"
ssh-keygen -y -f "$key" > /dev/null 2>&1 || fail "DEPLOY_SSH_KEY is not a readable, passphrase-less OpenSSH private key"

known="$ssh_dir/known_hosts"
printf '%s\n' "$DEPLOY_KNOWN_HOSTS" > "$known"
chmod 0644 "$known"
# Every non-comment line must be a real known_hosts entry: host pattern, key type, base64 key.
while read -r hosts type blob _; do
  case "$hosts" in ''|'#'*) continue ;; esac
  printf '%s %s\n' "$type" "$blob" | ssh-keygen -l -f - > /dev/null 2>&1 \
    || fail "DEPLOY_KNOWN_HOSTS has a line for '$hosts' that is not a valid public host key"
done < "$known"
echo "ssh-setup: key and $(grep -cv '^#' "$known") pinned host key line(s) written to $ssh_dir"
