"""Image size over its base and start-to-healthy time, on the testbed (`make bench-image`).

Not a test: it prints a table against the targets and asserts nothing. It builds the image the way `make image`
does (scripts/build-push.sh, PUSH=0: no registry traffic) and then, N times (--runs):
  * start -> /health 200: from `docker run -d` until GET /health on the published loopback port answers 200
    (polled every 20 ms). This is how long the process takes to serve.
  * docker run of `true`: the same container started without the app, Docker's own share of the above.
  * start -> healthy: until Docker itself reports the container healthy, with the healthcheck interval of the
    staging/production compose template (1 s). Docker runs the first probe one interval after start, so this
    cannot drop below ~1 s; it is the figure `docker compose up --wait` and the deploy see.
Targets: <= 60 MB over the base image, <= 2 s to healthy. Results also go to bench/results/image.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB_OVER_BASE = 60.0
TARGET_HEALTHY_S = 2.0
HEALTH_INTERVAL = "1s"  # as in ansible/roles/release/templates/compose.yml.j2


def sh(*argv: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        sys.exit(f"bench: `{' '.join(argv)}` failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def testbed_env() -> dict[str, str]:
    path = ROOT / ".testbed" / "env"
    if not path.is_file():
        sys.exit("bench: no .testbed/env; run `make testbed-up` (make bench-image does)")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def image_size(ref: str) -> int:
    return int(sh("docker", "image", "inspect", "-f", "{{.Size}}", ref).strip())


def health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def one_start(image: str, model: str, ollama_url: str, timeout: float = 60.0) -> tuple[float, float]:
    """Seconds from `docker run` to /health 200 and to Docker's "healthy"."""
    t0 = time.monotonic()
    cid = sh(
        "docker", "run", "-d", "-p", "127.0.0.1::8080", "--add-host", "host.docker.internal:host-gateway",
        "--health-interval", HEALTH_INTERVAL, "-e", "APP_ENV=staging", "-e", f"MODEL_NAME={model}",
        "-e", f"OLLAMA_BASE_URL={ollama_url}", image,
    ).strip()  # fmt: skip
    try:
        port = sh("docker", "port", cid, "8080/tcp").split(":")[-1].strip()
        serving = healthy = None
        while time.monotonic() - t0 < timeout and (serving is None or healthy is None):
            if serving is None and health_ok(f"http://127.0.0.1:{port}/health"):
                serving = time.monotonic() - t0
            if healthy is None:
                status = sh("docker", "inspect", "-f", "{{.State.Health.Status}}", cid).strip()
                if status == "healthy":
                    healthy = time.monotonic() - t0
            time.sleep(0.02)
        if serving is None or healthy is None:
            sys.exit(f"bench: container {cid[:12]} not healthy within {timeout} s")
        return serving, healthy
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    tb = testbed_env()
    out = sh("bash", "scripts/build-push.sh", env={"PUSH": "0"})
    tag = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("IMAGE_TAG=")][-1]
    image = f"{tb['IMAGE_REPOSITORY']}:{tag}"
    base_mb = image_size(tb["BASE_IMAGE"]) / 1e6
    image_mb = image_size(image) / 1e6

    # Baseline: what Docker itself costs to create and start a container of this image, without the app.
    baseline = []
    for _ in range(args.runs):
        t0 = time.monotonic()
        sh("docker", "run", "--rm", "--entrypoint", "true", image)
        baseline.append(time.monotonic() - t0)

    serving, healthy = [], []
    for _ in range(args.runs):
        s, h = one_start(image, tb["MODEL_NAME"], tb["OLLAMA_CONTAINER_URL"])
        serving.append(s)
        healthy.append(h)

    over = image_mb - base_mb
    rows = [
        ("base image", f"{base_mb:.1f} MB", tb["BASE_IMAGE"], ""),
        ("image", f"{image_mb:.1f} MB", image, ""),
        ("size over base", f"{over:.1f} MB", f"<= {TARGET_MB_OVER_BASE:.0f} MB", ok(over <= TARGET_MB_OVER_BASE)),
        ("docker run of `true` (median)", f"{statistics.median(baseline):.2f} s", "Docker's own share", ""),
        ("start -> /health 200 (median)", f"{statistics.median(serving):.2f} s", f"max {max(serving):.2f} s", ""),
        (
            f"start -> healthy, interval {HEALTH_INTERVAL} (median)",
            f"{statistics.median(healthy):.2f} s",
            f"<= {TARGET_HEALTHY_S:.0f} s; max {max(healthy):.2f} s",
            ok(statistics.median(healthy) <= TARGET_HEALTHY_S),
        ),
    ]
    docker = sh("docker", "version", "-f", "{{.Server.Version}}").strip()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nbench/image.py: {args.runs} starts, Docker {docker}, {os.cpu_count()} CPUs, load average {load}")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())

    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "image.json").write_text(
        json.dumps(
            {
                "image": image,
                "base_image": tb["BASE_IMAGE"],
                "base_mb": round(base_mb, 1),
                "image_mb": round(image_mb, 1),
                "mb_over_base": round(over, 1),
                "start_to_serving_s": [round(v, 3) for v in serving],
                "start_to_healthy_s": [round(v, 3) for v in healthy],
                "docker_run_true_s": [round(v, 3) for v in baseline],
                "health_interval": HEALTH_INTERVAL,
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )


def ok(passed: bool) -> str:
    return "ok" if passed else "OVER TARGET"


if __name__ == "__main__":
    main()
