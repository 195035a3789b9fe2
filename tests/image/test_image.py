"""The service image as built by scripts/build-push.sh on the testbed: user, labels, health, upstream, registry."""

from __future__ import annotations

import json

import pytest

from tests.image.conftest import TAG_RE, compiled_modules_with_debug_info, http_get, inspect, run, wait_for

INSIDE_GET = (
    "import json, sys, urllib.request, urllib.error\n"
    "try:\n"
    "    r = urllib.request.urlopen('http://127.0.0.1:8080' + sys.argv[1], timeout=10)\n"
    "    print(json.dumps({'status': r.status, 'body': json.load(r)}))\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(json.dumps({'status': e.code, 'body': json.load(e)}))\n"
)


def get_inside(container: str, path: str) -> tuple[int, dict]:
    """GET a path from inside the container (python stdlib, as the image has no curl)."""
    out = json.loads(run("docker", "exec", container, "python3", "-c", INSIDE_GET, path).stdout)
    return out["status"], out["body"]


def start_container(image: str, *env: str) -> str:
    args = ["docker", "run", "-d", "--add-host", "host.docker.internal:host-gateway", "-p", "127.0.0.1::8080"]
    for item in env:
        args += ["-e", item]
    return run(*args, image).stdout.strip()


def health_status(container: str) -> str:
    return inspect(container)["State"].get("Health", {}).get("Status", "")


@pytest.fixture(scope="module")
def container(testbed, built_image):
    """The image running as staging would, talking to the testbed's Ollama through host.docker.internal."""
    cid = start_container(
        built_image.ref,
        "APP_ENV=staging",
        f"MODEL_NAME={testbed['MODEL_NAME']}",
        f"OLLAMA_BASE_URL={testbed['OLLAMA_CONTAINER_URL']}",
    )
    try:
        yield cid
    finally:
        run("docker", "rm", "-f", cid, check=False)


def test_tag_is_immutable_sha_form(built_image):
    assert TAG_RE.match(built_image.tag)
    assert built_image.digest.startswith(f"{built_image.repository}@sha256:"), built_image.output


def test_runs_as_non_root_user(built_image):
    config = inspect(built_image.ref, "image")["Config"]
    assert config["User"] == "10001:10001"
    ids = run("docker", "run", "--rm", "--entrypoint", "id", built_image.ref).stdout
    assert ids.startswith("uid=10001(app) gid=10001"), ids


def test_labels_and_version_are_baked_in(built_image):
    config = inspect(built_image.ref, "image")["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == built_image.tag
    # The commit built from (other work may have been committed since: an ancestor of HEAD; "-dirty" when the
    # build context had uncommitted changes).
    revision = labels["org.opencontainers.image.revision"].removesuffix("-dirty")
    assert run("git", "merge-base", "--is-ancestor", revision, "HEAD", check=False).returncode == 0, revision
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert f"APP_VERSION={built_image.tag}" in config["Env"]
    # The image's own HEALTHCHECK exists and uses python, not curl (there is none in the image).
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python3"]


def test_final_stage_carries_no_build_tools_or_context_leftovers(built_image):
    script = (
        "import importlib.util, os, shutil, sys\n"
        "print(importlib.util.find_spec('pip') is None, shutil.which('curl') is None,\n"
        "      shutil.which('gcc') is None, shutil.which('strip') is None, not os.path.exists('/wheels'),\n"
        "      not os.path.exists('/build'), sorted(os.listdir('/app/service')) == ['app'])\n"
    )
    out = run("docker", "run", "--rm", "--entrypoint", "python3", built_image.ref, "-c", script).stdout.split()
    assert out == ["True"] * 7, f"pip, curl, gcc, strip, /wheels, /build absent; only app/ in /app/service: {out}"


def test_compiled_modules_carry_no_debug_info(built_image):
    # docker/slim-venv.sh strips it in the build stage (uvloop alone: 13 MB -> 1.6 MB). A .so that still has a
    # .debug_info section means the strip step did not run or missed a file.
    count, with_debug_info = compiled_modules_with_debug_info(built_image.ref)
    assert count >= 10, f"expected the venv's compiled modules (uvloop, aiohttp, ...), found {count}"
    assert with_debug_info == [], f"compiled modules with debug info: {with_debug_info}"


def test_healthcheck_turns_healthy(container):
    # The image's default interval is 5 s; a generous functional timeout (start period 30 s).
    wait_for(lambda: health_status(container) == "healthy", 60, "the container's HEALTHCHECK to pass")


def test_health_and_ready_from_inside_reach_the_double(container, built_image, testbed):
    wait_for(lambda: health_status(container) == "healthy", 60, "healthy")
    status, body = get_inside(container, "/health")
    assert status == 200
    assert body["version"] == built_image.tag  # APP_VERSION shows the tag
    assert body["env"] == "staging"
    # /ready asks Ollama's /api/tags at host.docker.internal:11434 (the bridge gateway on Linux).
    status, body = get_inside(container, "/ready")
    assert (status, body.get("status"), body.get("model")) == (200, "ready", testbed["MODEL_NAME"]), body


def test_ready_fails_when_the_model_is_not_in_ollama(testbed, built_image):
    # The same image and route, asked for a model the double does not have: proves /ready consults Ollama.
    cid = start_container(
        built_image.ref,
        "APP_ENV=staging",
        "MODEL_NAME=not-pulled:1b",
        f"OLLAMA_BASE_URL={testbed['OLLAMA_CONTAINER_URL']}",
    )
    try:
        wait_for(lambda: health_status(cid) == "healthy", 60, "healthy")
        status, body = get_inside(cid, "/ready")
        assert status == 503
        assert "not-pulled:1b" in body["reason"]
    finally:
        run("docker", "rm", "-f", cid, check=False)


def test_published_port_serves_from_the_host(container, built_image):
    port = inspect(container)["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    status, body = wait_for(lambda: http_get(f"http://127.0.0.1:{port}/health"), 60, "/health on the host port")
    assert (status, body["version"]) == (200, built_image.tag)
