"""Fixtures for the image and compose-stack tests: they run against the real testbed (testbed/up.sh), never skip.

Session order: `testbed` runs up.sh (idempotent, a few seconds when it already runs) and fails the session with
its output if it cannot start; `built_image` builds and pushes once with scripts/build-push.sh, exactly what
`make image`, CI and the demo run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTBED_ENV = ROOT / ".testbed" / "env"
TAG_RE = re.compile(r"^sha-[0-9a-f]{7,40}$")
# These tests push to their own repository on the testbed registry: the deploy role prunes every local tag of the
# deployed repository that no release needs (release_history), and a deploy may run on the testbed meanwhile.
TEST_REPOSITORY = "local-llm-server-imgtest"


def run(*argv: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600, **kw):
    """subprocess.run with captured text output; a failure shows the command's output in the assertion."""
    result = subprocess.run(
        argv,
        cwd=kw.pop("cwd", ROOT),
        env={**os.environ, **(env or {})},
        text=True,
        capture_output=True,
        timeout=timeout,
        **kw,
    )
    if check:
        assert result.returncode == 0, (
            f"`{' '.join(argv)}` exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def parse_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback URLs only)
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll until predicate() is truthy; fail naming `what` (functional timeout, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError) as exc:  # connection refused, reset, bad JSON while starting
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# Runs inside an image: the section names of every shared object in the venv (ELF64 little-endian section headers;
# only the fields needed to read .shstrtab). Prints the number of files, then those with a .debug_info section.
_DEBUG_SECTIONS_SCRIPT = """
import pathlib, struct
def sections(data):
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3A)
    def header(i):
        name, = struct.unpack_from('<I', data, shoff + i * shentsize)
        offset, size = struct.unpack_from('<QQ', data, shoff + i * shentsize + 0x18)
        return name, offset, size
    _, stroff, _ = header(shstrndx)
    return [data[stroff + name:data.index(b'\\0', stroff + name)].decode() for name, _, _ in map(header, range(shnum))]
sos = sorted(pathlib.Path('/opt/venv').rglob('*.so'))
print(len(sos))
for so in sos:
    if '.debug_info' in sections(so.read_bytes()):
        print(so)
"""


def compiled_modules_with_debug_info(ref: str) -> tuple[int, list[str]]:
    """(how many .so files the image's venv has, those that still carry a .debug_info section)."""
    out = run("docker", "run", "--rm", "--entrypoint", "python3", ref, "-c", _DEBUG_SECTIONS_SCRIPT).stdout.split()
    return int(out[0]), out[1:]


def inspect(ref: str, kind: str = "container") -> dict:
    return json.loads(run("docker", kind, "inspect", ref).stdout)[0]


@pytest.fixture(scope="session")
def testbed() -> dict[str, str]:
    result = subprocess.run(["bash", "testbed/up.sh"], cwd=ROOT, text=True, capture_output=True, timeout=900)
    assert result.returncode == 0, (
        f"testbed/up.sh failed ({result.returncode}); the image tests need it:\n{result.stdout}\n{result.stderr}"
    )
    env = parse_env_file(TESTBED_ENV)
    for key in ("REGISTRY", "IMAGE_REPOSITORY", "REGISTRY_PASSWORD_FILE", "BASE_IMAGE", "MODEL_NAME"):
        assert env.get(key), f"{TESTBED_ENV} lacks {key}"
    return env


@pytest.fixture(scope="session")
def docker_config(testbed) -> dict[str, str]:
    """Environment for docker commands that talk to the registry: build-push.sh's login lives there."""
    return {"DOCKER_CONFIG": str(ROOT / ".testbed" / "docker")}


@dataclass(frozen=True)
class BuiltImage:
    repository: str
    tag: str
    digest: str
    image_id: str
    output: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


@pytest.fixture(scope="session")
def built_image(testbed, docker_config) -> Iterator[BuiltImage]:
    repository = f"{testbed['REGISTRY']}/{TEST_REPOSITORY}"
    result = run("bash", "scripts/build-push.sh", env={"IMAGE_REPOSITORY": repository, **docker_config}, timeout=900)
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert TAG_RE.match(values.get("IMAGE_TAG", "")), f"build-push.sh printed no valid IMAGE_TAG:\n{result.stdout}"
    assert values.get("IMAGE") == f"{repository}:{values['IMAGE_TAG']}", result.stdout
    yield BuiltImage(
        repository=repository,
        tag=values["IMAGE_TAG"],
        digest=values.get("IMAGE_DIGEST", ""),
        image_id=inspect(values["IMAGE"], "image")["Id"],
        output=result.stdout + result.stderr,
    )
    # Every run with uncommitted edits makes a new tag: drop this repository's local tags (the registry keeps them).
    tags = run("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
    if tags:
        run("docker", "image", "rm", *tags, check=False)
