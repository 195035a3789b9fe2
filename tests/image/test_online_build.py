"""The Dockerfile's online path, the one GitHub's runners take: no wheelhouse, no BUILD_BASE_IMAGE.

There the build stage installs binutils with apt-get and pip resolves requirements.txt from a package index. Neither
Docker Hub (python:3.12-slim) nor PyPI is reachable from containers here, so the testbed's base image stands in
for python:3.12-slim (it has no binutils either) and a PEP 503 index served from the testbed's wheelhouse stands in
for PyPI (PIP_INDEX_URL). The build runs on the host's network, so that the index can stay on loopback (pip trusts
plain HTTP only there) and apt-get reaches the Debian archive, as on GitHub.
"""

from __future__ import annotations

import functools
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.image.conftest import compiled_modules_with_debug_info, run


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def package_index(testbed, tmp_path):
    """http://127.0.0.1:<port>/simple/: one page per project listing the wheelhouse's files (PEP 503)."""
    simple = tmp_path / "simple"
    for wheel in Path(testbed["WHEELHOUSE"]).glob("*.whl"):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()  # PEP 503 normalized name
        (simple / project).mkdir(parents=True, exist_ok=True)
        (simple / project / wheel.name).symlink_to(wheel)
    for project_dir in simple.iterdir():
        links = "".join(f'<a href="{f.name}">{f.name}</a>\n' for f in sorted(project_dir.glob("*.whl")))
        (project_dir / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()


def test_build_without_wheelhouse_installs_binutils_and_uses_the_index(testbed, package_index):
    # --no-cache: every step runs, the apt-get one included (a cached layer would say nothing about it).
    tag = "local-llm-server-online-build:test"
    try:
        build = run(
            "docker", "build", "--no-cache", "--network", "host", "--build-arg", f"BASE_IMAGE={testbed['BASE_IMAGE']}",
            "--build-arg", f"PIP_INDEX_URL={package_index}", "--build-arg", "APP_VERSION=sha-0nline0", "-t", tag, ".",
            timeout=900,
        )  # fmt: skip
        output = build.stdout + build.stderr
        assert "Setting up binutils" in output, "the build stage did not install binutils with apt-get"
        assert f"Looking in indexes: {package_index}" in output, "pip did not resolve from the index"
        assert "slim-venv: every compiled module" in output
        # What came out is the same image as the offline build's: stripped, serving its version.
        count, with_debug_info = compiled_modules_with_debug_info(tag)
        assert count >= 10 and with_debug_info == [], (count, with_debug_info)
        version = run(
            "docker", "run", "--rm", "--entrypoint", "python3", "-e", "APP_ENV=local", tag, "-c",
            "from app.config import load_settings; print(load_settings().app_version)",
        ).stdout.strip()  # fmt: skip
        assert version == "sha-0nline0"
    finally:
        run("docker", "image", "rm", "-f", tag, check=False)
