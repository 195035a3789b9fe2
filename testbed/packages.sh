# shellcheck shell=bash
# The testbed's Debian packages, in one place: testbed/up.sh installs the missing ones, testbed/fresh.sh --packages
# purges them again so that a rehearsal starts from a machine without them. Sourced by both, not run.

# shellcheck disable=SC2034 # the scripts that source this file use these
# The Docker engine: installed only where no engine answers (up.sh says why).
TESTBED_ENGINE_PACKAGE=docker.io
# What only the testbed needs; fresh.sh --packages purges these (and the engine package).
TESTBED_PACKAGES=(docker-registry openssh-server debootstrap apache2-utils
    python3-requests python3-docker) # the last two: community.docker modules on the "Mac" (deploy user)
# Tools most machines have anyway: installed when missing, never purged. sudo: the admin account make setup becomes
# root with; python3-yaml: the cloudflared check reads the tunnel's config with it on the "Mac".
TESTBED_TOOLS=(openssh-client curl iproute2 sudo python3-yaml)
