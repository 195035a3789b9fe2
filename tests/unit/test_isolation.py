"""Production stays fast while staging is flooded, when each environment's share of the shared Ollama's slots (its
service's MAX_CONCURRENT) adds up to no more than Ollama's parallel slots (OLLAMA_NUM_PARALLEL); without shares,
staging's generations hold every slot and production's requests wait behind them.

Real HTTP: one Ollama double with 4 slots and 2-second staging generations, and per scenario a production and a
staging service under uvicorn (tests/unit/conftest.py's start_service). The scenarios and the measuring code are
bench/isolation.py's (`make bench-isolation` prints the figures); this test asserts only the contrast, milliseconds
against seconds, so a busy machine cannot flip it.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.fakes.ollama import OllamaDouble

from .conftest import REPO

# bench/ is a directory of scripts, not a package: loaded by path (as tests/unit/test_bench_floor.py does).
_SPEC = importlib.util.spec_from_file_location("bench_isolation", REPO / "bench" / "isolation.py")
isolation = sys.modules[_SPEC.name] = importlib.util.module_from_spec(_SPEC)  # dataclasses look the module up there
_SPEC.loader.exec_module(isolation)

GENERATION = 2.0  # seconds of one staging generation
PROBES = 5  # production requests per scenario
# Scheduling noise on a shared 2-core machine (the flood's 32 streams share the CPUs with the probe). A twentieth of
# one generation: waiting behind staging costs most of a generation, which no slack of this size can hide.
SLACK = 0.1


@pytest.fixture(scope="module")
def ollama():
    # The scheduler is what is under test: 4 slots, Ollama's other defaults.
    with OllamaDouble(model=isolation.MODEL, num_parallel=isolation.SLOTS) as double:
        double.configure(**isolation.double_knobs(GENERATION))
        yield double


def run(scenario, ollama: OllamaDouble, start_service):
    services = [start_service(**isolation.service_env(ollama.url, scenario.production_slots, "production"))]
    if scenario.staging_slots:
        services.append(start_service(**isolation.service_env(ollama.url, scenario.staging_slots, "staging")))
    staging = services[1].url if scenario.staging_slots else None
    result = isolation.measure(scenario, ollama.url, services[0].url, staging, PROBES)
    isolation.wait_until_idle(ollama.url)
    for service in services:
        service.stop()
    return result


def test_shares_of_ollamas_slots_keep_production_out_of_stagings_queue(ollama, start_service):
    alone, shares, no_shares = (run(scenario, ollama, start_service) for scenario in isolation.SCENARIOS)
    ttft = {r.scenario.name: [round(t, 3) for t in r.ttft] for r in (alone, shares, no_shares)}

    # With shares (production 3 + staging 1 = 4 slots) production's requests never wait behind staging's.
    assert shares.p50 < 0.5, ttft
    assert shares.p50 < 1.2 * alone.p50 + SLACK, ttft
    # Without shares staging holds all 4 slots, and each probe waits for a staging generation to end.
    assert no_shares.p50 >= GENERATION / 2, ttft
    # Staging's queue held the whole flood: nothing was refused, so the contrast is not one of staging backing off.
    assert shares.refused == no_shares.refused == 0
