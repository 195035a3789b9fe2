#!/usr/bin/env bash
# Build the service image on the testbed and push it to the testbed registry (make image; used by make demo and
# tests/image). GitHub's deploy-staging workflow does the same with docker/build-push-action against ghcr.io.
#
#   tag     sha-<git short hash> of HEAD when the build context (Dockerfile, .dockerignore, requirements.txt,
#           service/app, docker/wheels, docker/slim-venv.sh) is committed and BUILD_VARIANT is empty. Otherwise
#           sha-<first 12 hex of a sha256 over the context's files + BUILD_VARIANT>: uncommitted edits never
#           reuse a commit's tag, and the tag still matches sha-[0-9a-f]{7,40}.
#   pushes  <IMAGE_REPOSITORY>:<tag> and <IMAGE_REPOSITORY>:staging, after `docker login --password-stdin`
#           from the testbed's 0600 password file, with DOCKER_CONFIG=.testbed/docker (root's ~/.docker untouched)
#   stdout  IMAGE=<repo>:<tag>, IMAGE_DIGEST=<repo>@sha256:..., IMAGE_TAG=<tag> (last line); progress on stderr
#
# Environment (defaults from .testbed/env, written by testbed/up.sh):
#   IMAGE_REPOSITORY, REGISTRY, REGISTRY_USER, REGISTRY_PASSWORD_FILE, BASE_IMAGE, BUILD_BASE_IMAGE, WHEELHOUSE
#                  (with WHEELHOUSE the build runs with --network none: offline, as the Dockerfile promises)
#   BUILD_VARIANT  any string: a distinct build (and tag) from the same tree, e.g. the demo's second release;
#                  baked into the image as the label io.local-llm-server.variant
#   PUSH=0         build and tag only
# `build-push.sh --tag-only` prints the tag it would use and exits (no testbed needed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_VARIANT=${BUILD_VARIANT:-}
PUSH=${PUSH:-1}

log() { printf '[build-push] %s\n' "$*" >&2; }

CONTEXT_PATHS=(Dockerfile .dockerignore requirements.txt service/app docker/wheels docker/slim-venv.sh)

# ------------------------------------------------------------------------------------------- tag
revision=$(git rev-parse HEAD)
context_dirty=$(git status --porcelain --untracked-files=all -- "${CONTEXT_PATHS[@]}" | grep -v '__pycache__' || true)
if [[ -z $context_dirty && -z $BUILD_VARIANT ]]; then
    TAG="sha-$(git rev-parse --short=7 HEAD)"
else
    # Content hash: every context file's path and bytes (as the build sees them), plus the variant.
    TAG="sha-$(
        {
            find "${CONTEXT_PATHS[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
                xargs -0 sha256sum
            printf 'variant=%s\n' "$BUILD_VARIANT"
        } | sha256sum | cut -c1-12
    )"
    [[ -n $context_dirty ]] && revision="$revision-dirty"
    log "uncommitted changes or BUILD_VARIANT: content-hash tag $TAG"
fi
[[ $TAG =~ ^sha-[0-9a-f]{7,40}$ ]] || {
    echo "build-push: bad tag $TAG" >&2
    exit 1
}
if [[ ${1:-} == --tag-only ]]; then
    echo "$TAG"
    exit 0
fi

ENV_FILE="$ROOT/.testbed/env"
[[ -f $ENV_FILE ]] || {
    echo "build-push: no $ENV_FILE; run 'make testbed-up' first" >&2
    exit 1
}
# Values already in the environment win over the testbed's.
while IFS='=' read -r key value; do
    [[ $key =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
    [[ -n ${!key:-} ]] || export "$key=$value"
done <"$ENV_FILE"
: "${IMAGE_REPOSITORY:?}" "${REGISTRY:?}" "${REGISTRY_USER:?}" "${REGISTRY_PASSWORD_FILE:?}" "${BASE_IMAGE:?}"
IMAGE="$IMAGE_REPOSITORY:$TAG"

# ------------------------------------------------------------------------------------------- build
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "APP_VERSION=$TAG" --build-arg "VCS_REF=$revision")
[[ -n ${BUILD_BASE_IMAGE:-} ]] && build_args+=(--build-arg "BUILD_BASE_IMAGE=$BUILD_BASE_IMAGE")
if [[ -n ${WHEELHOUSE:-} ]]; then
    # The Dockerfile takes a context-relative directory; .dockerignore lets .testbed/wheelhouse through.
    rel=$(realpath --relative-to="$ROOT" "$WHEELHOUSE")
    [[ $rel != ../* ]] || {
        echo "build-push: WHEELHOUSE must be inside the repository (build context): $WHEELHOUSE" >&2
        exit 1
    }
    # Offline, and proven so: pip installs from the wheelhouse, binutils come with BUILD_BASE_IMAGE, and the build's
    # RUN steps have no network to fall back on.
    build_args+=(--build-arg "WHEELHOUSE=$rel" --network none)
fi
origin=$(git remote get-url origin 2>/dev/null || true)
[[ $origin == https://github.com/* ]] && build_args+=(--build-arg "SOURCE_URL=${origin%.git}")
label_args=()
[[ -n $BUILD_VARIANT ]] && label_args=(--label "io.local-llm-server.variant=$BUILD_VARIANT")

log "building $IMAGE from $BASE_IMAGE"
started=$(date +%s)
docker build "${build_args[@]}" "${label_args[@]}" -t "$IMAGE" -t "$IMAGE_REPOSITORY:staging" "$ROOT" >&2
log "built in $(($(date +%s) - started)) s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=si)B"

# ------------------------------------------------------------------------------------------- push
if [[ $PUSH != 0 ]]; then
    # A config dir of our own: the credentials (base64 in config.json, 0600) live with the testbed, not in
    # root's ~/.docker, and `down` removes them.
    export DOCKER_CONFIG=${DOCKER_CONFIG:-$ROOT/.testbed/docker}
    mkdir -p "$DOCKER_CONFIG" && chmod 0700 "$DOCKER_CONFIG"
    docker login --username "$REGISTRY_USER" --password-stdin "$REGISTRY" <"$REGISTRY_PASSWORD_FILE" >/dev/null
    for ref in "$IMAGE" "$IMAGE_REPOSITORY:staging"; do
        log "pushing $ref"
        docker push --quiet "$ref" >&2
    done
    digest=$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE" |
        grep -F "$IMAGE_REPOSITORY@" | head -n 1)
    echo "IMAGE_DIGEST=$digest"
fi
echo "IMAGE=$IMAGE"
echo "IMAGE_TAG=$TAG"
