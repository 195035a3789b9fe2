#!/usr/bin/env bash
# Promotes an already-built, already-tested image to production's channel tag WITHOUT rebuilding: the manifest of
# IMAGE_REPOSITORY:IMAGE_TAG is pushed again as IMAGE_REPOSITORY:PROMOTE_TO (default latest) and the digests are
# compared. The caller is already logged in to the registry (docker/login-action in CI, the testbed in tests).
set -euo pipefail
: "${IMAGE_REPOSITORY:?IMAGE_REPOSITORY is required, e.g. ghcr.io/OWNER/local-llm-server}"
: "${IMAGE_TAG:?IMAGE_TAG is required, e.g. sha-abc1234}"
target=${PROMOTE_TO:-latest}
[[ $IMAGE_TAG =~ ^sha-[0-9a-f]{7,40}$ ]] || { echo "promote: IMAGE_TAG must look like sha-<hex>, got '$IMAGE_TAG'" >&2; exit 2; }

src="$IMAGE_REPOSITORY:$IMAGE_TAG"
echo "promote: pulling $src (must have been built and tested on staging)"
docker pull --quiet "$src" > /dev/null || { echo "promote: $src is not in the registry; push to staging first" >&2; exit 1; }
digest_of() { docker image inspect --format '{{join .RepoDigests "\n"}}' "$1" | grep -F "$IMAGE_REPOSITORY@" | head -n1 | cut -d@ -f2; }
src_digest=$(digest_of "$src")
docker tag "$src" "$IMAGE_REPOSITORY:$target"
# The registry reports the digest it stored for the pushed tag ("latest: digest: sha256:... size: N").
dst_digest=$(docker push "$IMAGE_REPOSITORY:$target" | sed -n 's/.*digest: \(sha256:[0-9a-f]*\).*/\1/p' | tail -n1)
[ "$src_digest" = "$dst_digest" ] || { echo "promote: digest changed ($src_digest -> $dst_digest)" >&2; exit 1; }
echo "promote: $IMAGE_REPOSITORY:$target = $IMAGE_TAG ($src_digest)"
