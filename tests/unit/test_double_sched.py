"""The double's model of Ollama's scheduler (tests/fakes/ollama_sched.py), from Ollama's documented behaviour.

Sources: ollama/ollama server/sched.go (getRunner, processPending, processCompleted, findRunnerToUnload,
ByDurationAndName, expireRunner, useLoadedRunner), llm/llama_server.go (the slots: a golang.org/x/sync/semaphore
whose waiters are served in order), envconfig/config.go (OLLAMA_NUM_PARALLEL 1, OLLAMA_MAX_QUEUE 512,
OLLAMA_KEEP_ALIVE 5m), api/types.go (Duration), server/routes.go (the 503, /api/ps, the unload request),
docs/faq.mdx "How does Ollama handle concurrent requests?", and ollama/ollama#7758 (OLLAMA_MAX_QUEUE does not bound
requests for a loaded model: they wait on the runner's semaphore).

The scheduler's own tests run on a fake clock (asyncio, time moved by hand); the HTTP tests at the end check that the
double's routes go through it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.fakes.ollama import OllamaDouble
from tests.fakes.ollama_sched import (
    FOREVER,
    SERVER_BUSY,
    FakeClock,
    Scheduler,
    ServerBusy,
    Settings,
    keep_alive_seconds,
    settle,
)

REPO = Path(__file__).resolve().parents[2]
MODEL = "llama3.2:1b"


class Req:
    """One request holding the scheduler from `use` until `finish()` (or until it is cancelled: its client left)."""

    def __init__(self, sched: Scheduler, model: str = "a", keep_alive: float | None = None, slot: bool = True):
        self.running = False
        self.ran = False
        self.busy: ServerBusy | None = None
        self._finish = asyncio.Event()
        self.task = asyncio.ensure_future(self._run(sched, model, keep_alive, slot))

    async def _run(self, sched: Scheduler, model: str, keep_alive: float | None, slot: bool) -> None:
        try:
            async with sched.use(model, keep_alive, slot=slot):
                self.running = self.ran = True
                await self._finish.wait()
        except ServerBusy as exc:
            self.busy = exc
        finally:
            self.running = False

    async def finish(self) -> None:
        self._finish.set()
        await settle()

    async def leave(self) -> None:
        self.task.cancel()
        await settle()


def run(test) -> None:
    """Run an async test body on a fresh loop."""
    asyncio.run(test())


async def started(*reqs: Req) -> list[Req]:
    await settle()
    return list(reqs)


def running(reqs: list[Req]) -> list[bool]:
    return [r.running for r in reqs]


# -- slots ---------------------------------------------------------------------------------------------------------


def test_a_loaded_model_serves_num_parallel_requests_and_the_rest_wait_in_arrival_order():
    # OLLAMA_NUM_PARALLEL per loaded model; llm/llama_server.go s.sem.Acquire: waiters served first in, first out.
    async def body():
        sched = Scheduler(Settings(num_parallel=2), FakeClock())
        reqs = await started(*(Req(sched) for _ in range(5)))
        assert running(reqs) == [True, True, False, False, False]
        await reqs[1].finish()
        assert running(reqs) == [True, False, True, False, False]
        await reqs[0].finish()
        assert running(reqs) == [False, False, True, True, False]
        late = Req(sched)  # arrives while one waits: it queues behind it (Acquire checks waiters.Len() == 0)
        await reqs[2].finish()
        assert running([*reqs, late]) == [False, False, False, True, True, False]

    run(body)


def test_slot_waits_are_not_bounded_by_max_queue():
    # getRunner hands a loaded model over at once; only requests that need the scheduler count against
    # OLLAMA_MAX_QUEUE (ollama/ollama#7758): 20 requests wait for the one slot, none is refused.
    async def body():
        sched = Scheduler(Settings(num_parallel=1, max_queue=1), FakeClock())
        first = await started(Req(sched))
        waiting = await started(*(Req(sched) for _ in range(20)))
        assert running(first) == [True] and not any(running(waiting))
        assert all(r.busy is None for r in waiting)
        assert sched.loaded["a"].slots.waiting == 20

    run(body)


def test_a_request_that_only_loads_the_model_holds_no_slot():
    # An empty prompt / message list loads the model and answers done_reason "load": no Completion, no slot.
    async def body():
        sched = Scheduler(Settings(num_parallel=1), FakeClock())
        generating = await started(Req(sched))
        loading_only = await started(Req(sched, slot=False))
        assert running(generating + loading_only) == [True, True]

    run(body)


# -- loads and the pending queue -----------------------------------------------------------------------------------


def test_a_request_for_a_model_not_loaded_waits_for_its_load():
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(load_duration=5.0), clock)
        first = await started(Req(sched))
        await clock.advance(4)
        assert running(first) == [False] and sched.loaded_models() == []
        await clock.advance(1)
        assert running(first) == [True] and [m.model for m in sched.loaded_models()] == ["a"]
        await first[0].finish()
        again = await started(Req(sched))  # loaded now: no wait
        assert running(again) == [True]

    run(body)


def test_requests_waiting_for_the_scheduler_beyond_max_queue_get_server_busy():
    # sched.go: pendingReqCh has OLLAMA_MAX_QUEUE places; the one being scheduled is not in it; a send that finds
    # it full is ErrMaxQueue, a 503 (routes.go handleScheduleError).
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(max_queue=2, load_duration=10.0), clock)
        loading = await started(Req(sched))
        queued = await started(Req(sched), Req(sched))
        refused = await started(Req(sched), Req(sched, model="b"))
        assert [r.busy for r in loading + queued] == [None, None, None]
        assert [str(r.busy) for r in refused] == [SERVER_BUSY] * 2
        assert SERVER_BUSY == "server busy, please try again.  maximum pending requests exceeded"
        await clock.advance(10)
        assert running(loading + queued) == [True, False, False]  # loaded; the queued ones wait for the slot
        (late,) = await started(Req(sched))
        assert late.busy is None  # the model is loaded: no more queueing for the scheduler

    run(body)


def test_one_load_at_a_time():
    # processPending handles one request at a time, blocked while it loads.
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(load_duration=10.0), clock)
        a, b = await started(Req(sched, "a"), Req(sched, "b"))
        await clock.advance(10)
        assert (a.running, b.running) == (True, False)
        await clock.advance(10)
        assert (a.running, b.running) == (True, True)

    run(body)


# -- eviction ------------------------------------------------------------------------------------------------------


def test_at_the_loaded_limit_the_idle_model_with_the_shortest_keep_alive_is_unloaded_not_the_least_recent():
    # findRunnerToUnload: sort.Sort(ByDurationAndName(...)), then the first with refCount 0.
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(max_loaded_models=2), clock)
        short = await started(Req(sched, "a", keep_alive=60))
        long = await started(Req(sched, "b", keep_alive=600))
        await short[0].finish()
        await long[0].finish()
        await clock.advance(1)
        used = await started(Req(sched, "a"))  # "a" is now the most recently used ...
        await used[0].finish()
        await started(Req(sched, "c"))
        assert sorted(sched.loaded) == ["b", "c"]  # ... and unloaded all the same: its keep_alive is shortest

    run(body)


def test_equal_keep_alives_unload_by_name_and_busy_models_are_never_chosen_while_one_is_idle():
    async def body():
        sched = Scheduler(Settings(max_loaded_models=3), FakeClock())
        a, b, c = await started(Req(sched, "a"), Req(sched, "b"), Req(sched, "c"))
        await b.finish()
        await c.finish()
        await started(Req(sched, "d"))
        assert sorted(sched.loaded) == ["a", "c", "d"]  # "a" is busy; of b and c, b comes first by name

    run(body)


def test_when_every_model_is_busy_the_first_in_order_is_unloaded_once_its_requests_finish():
    # "None appear idle, just wait for the one with the shortest duration": its duration becomes 0 and the
    # scheduler waits for the unload; another model going idle does not help.
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(max_loaded_models=2), clock)
        a, b = await started(Req(sched, "a"), Req(sched, "b"))
        c = (await started(Req(sched, "c")))[0]
        await b.finish()
        await clock.advance(1)
        assert not c.running and sorted(sched.loaded) == ["a", "b"]  # b is idle but not the one chosen
        await a.finish()
        assert c.running and sorted(sched.loaded) == ["b", "c"]

    run(body)


# -- keep_alive ----------------------------------------------------------------------------------------------------


def test_an_idle_model_is_unloaded_after_keep_alive_default_five_minutes():
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(), clock)
        assert sched.settings.keep_alive == 300.0
        r = (await started(Req(sched)))[0]
        await clock.advance(1000)  # busy: no timer runs
        await r.finish()
        await clock.advance(299)
        assert "a" in sched.loaded
        await clock.advance(1)
        assert sched.loaded == {}

    run(body)


def test_a_new_request_stops_the_timer_and_the_next_idle_moment_starts_it_again():
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(keep_alive=100.0), clock)
        await (await started(Req(sched)))[0].finish()
        await clock.advance(90)
        r = (await started(Req(sched)))[0]
        await clock.advance(90)
        await r.finish()
        await clock.advance(99)
        assert "a" in sched.loaded
        await clock.advance(1)
        assert sched.loaded == {}

    run(body)


def test_a_request_keep_alive_replaces_the_models_and_later_requests_without_one_keep_it():
    # useLoadedRunner: `if pending.sessionDuration != nil { runner.sessionDuration = ... }`.
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(), clock)
        await (await started(Req(sched, keep_alive=10)))[0].finish()
        await (await started(Req(sched)))[0].finish()
        await clock.advance(10)
        assert sched.loaded == {}

    run(body)


def test_keep_alive_zero_unloads_at_once_and_negative_keeps_it_forever():
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(), clock)
        await (await started(Req(sched, "a", keep_alive=0)))[0].finish()
        assert "a" not in sched.loaded
        await (await started(Req(sched, "b", keep_alive=keep_alive_seconds(-1))))[0].finish()
        idle_since = clock.now()
        await clock.advance(10 * 365 * 86400)
        assert "b" in sched.loaded
        (ps,) = sched.loaded_models()
        assert ps.expires_at - idle_since > 290 * 365 * 86400  # time.Duration(math.MaxInt64): ~292 years

    run(body)


def test_an_unload_request_unloads_an_idle_model_at_once_and_a_busy_one_when_its_last_request_finishes():
    # sched.go expireRunner (an empty prompt with keep_alive 0).
    async def body():
        sched = Scheduler(Settings(), FakeClock())
        await (await started(Req(sched, "a")))[0].finish()
        sched.expire("a")
        assert sched.loaded == {}
        busy = (await started(Req(sched, "b")))[0]
        sched.expire("b")
        assert "b" in sched.loaded
        await busy.finish()
        assert sched.loaded == {}
        sched.expire("never-loaded")  # nothing to do

    run(body)


def test_ps_expires_at_is_set_when_the_model_goes_idle_and_lists_the_longest_first():
    # loadedModels: a zero expiresAt (never idle yet) reads now + sessionDuration; PsHandler sorts descending.
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(), clock)
        t0 = clock.now()
        a = (await started(Req(sched, "a", keep_alive=60)))[0]
        assert [(m.model, m.expires_at) for m in sched.loaded_models()] == [("a", t0 + 60)]
        await clock.advance(10)
        await a.finish()
        b = (await started(Req(sched, "b", keep_alive=600)))[0]
        await clock.advance(5)
        again = (await started(Req(sched, "a")))[0]  # busy again: expires_at stays what it was
        assert [(m.model, m.expires_at) for m in sched.loaded_models()] == [("b", t0 + 615), ("a", t0 + 70)]
        await again.finish()
        await b.finish()

    run(body)


# -- clients that leave --------------------------------------------------------------------------------------------


def test_a_request_that_leaves_while_waiting_for_a_slot_gives_up_its_place_at_once():
    async def body():
        sched = Scheduler(Settings(num_parallel=1), FakeClock())
        holder, leaving, next_one = await started(Req(sched), Req(sched), Req(sched))
        await leaving.leave()
        assert sched.loaded["a"].slots.waiting == 1
        await holder.finish()
        assert next_one.running and not leaving.ran
        await next_one.finish()
        assert sched.loaded["a"].refs == 0 and sched.loaded["a"].timer is not None  # idle: the timer runs

    run(body)


def test_a_request_that_leaves_the_pending_queue_keeps_its_place_until_the_scheduler_skips_it():
    # A buffered channel holds what was sent until it is received; processPending skips a request whose context
    # is done (pending.ctx.Err() != nil).
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(max_queue=1, load_duration=10.0), clock)
        loading, leaving = await started(Req(sched), Req(sched, "b"))
        await leaving.leave()
        refused = (await started(Req(sched, "c")))[0]
        assert str(refused.busy) == SERVER_BUSY
        await clock.advance(10)
        assert loading.running and not leaving.ran and sorted(sched.loaded) == ["a"]  # "b" never loaded
        queued = (await started(Req(sched, "c")))[0]
        assert queued.busy is None

    run(body)


def test_a_load_whose_requester_leaves_is_abandoned():
    # llama.Load(req.ctx, ...): the load fails with the request's context; the model is not loaded.
    async def body():
        clock = FakeClock()
        sched = Scheduler(Settings(load_duration=10.0), clock)
        leaving, behind = await started(Req(sched), Req(sched))
        await clock.advance(5)
        await leaving.leave()
        await clock.advance(5)
        assert sched.loaded == {} and not behind.running  # the next request starts its own load
        await clock.advance(5)
        assert behind.running

    run(body)


# -- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "env", "seconds"),
    [
        (300, False, 300.0),
        (0.5, False, 0.5),
        (-1, False, FOREVER),
        (1.797693134862316e299, False, FOREVER),  # beyond int64 nanoseconds: saturated, as on arm64
        ("1h30m", False, 5400.0),
        ("0", False, 0.0),
        ("-5m", False, FOREVER),
        ("300", True, 300.0),  # OLLAMA_KEEP_ALIVE: an integer number of seconds is also accepted
        ("-1", True, FOREVER),
    ],
)
def test_keep_alive_values(value, env, seconds):
    assert keep_alive_seconds(value, env=env) == seconds


@pytest.mark.parametrize(("value", "env"), [("300", False), ("soon", True), (True, False), (None, False)])
def test_keep_alive_values_refused(value, env):
    with pytest.raises(ValueError):
        keep_alive_seconds(value, env=env)


# -- over HTTP -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with OllamaDouble(model=MODEL) as double:
        yield double


@pytest.fixture
def double(server):
    server.reset()
    yield server
    server.reset()


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}


def in_thread(fn) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def test_http_a_full_queue_is_a_503_with_ollamas_text_in_each_apis_shape(double):
    double.configure(load_duration=1.0, max_queue=1)
    with httpx.Client(base_url=double.url, timeout=10) as http:
        loading, loaded = in_thread(lambda: http.post("/api/chat", json=CHAT))
        double.wait_for(lambda r: r.path == "/api/chat")
        queued, queued_result = in_thread(lambda: http.post("/api/generate", json={"model": MODEL, "prompt": "x"}))
        double.wait_for(lambda r: r.path == "/api/generate")
        refused = http.post("/api/chat", json=CHAT)
        assert refused.status_code == 503
        assert refused.content == b'{"error":"server busy, please try again.  maximum pending requests exceeded"}'
        openai = http.post("/v1/chat/completions", json=CHAT)
        assert openai.status_code == 503
        assert openai.json() == {"error": {"message": SERVER_BUSY, "type": "api_error", "param": None, "code": None}}
        for thread in (loading, queued):
            thread.join(10)
        assert loaded[0].status_code == 200 and queued_result[0].status_code == 200


def test_http_ps_lists_what_is_loaded_and_an_unload_request_unloads_it(double):
    with httpx.Client(base_url=double.url, timeout=10) as http:
        assert http.get("/api/ps").json() == {"models": []}
        assert http.post("/api/chat", json=CHAT).status_code == 200
        (listed,) = http.get("/api/ps").json()["models"]
        assert listed["name"] == MODEL
        expires = datetime.strptime(listed["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs(expires.timestamp() - (time.time() + 300)) < 5  # OLLAMA_KEEP_ALIVE's 5 minutes
        unload = http.post("/api/generate", json={"model": MODEL, "keep_alive": 0}).json()
        assert (unload["done"], unload["done_reason"], unload["response"]) == (True, "unload", "")
        assert http.get("/api/ps").json() == {"models": []}
        load = http.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": "-1s"}).json()
        assert load["done_reason"] == "load"
        (forever,) = http.get("/api/ps").json()["models"]
        assert forever["expires_at"] > "2200"  # now + ~292 years


def test_http_one_slot_serves_streams_in_turn_and_a_client_that_leaves_the_queue_is_skipped(double):
    # Ollama's default OLLAMA_NUM_PARALLEL=1: a stream waits for the one before it to end.
    double.configure(token_count=4, token_delay=0.2)
    stream = {**CHAT, "stream": True}
    raw = json.dumps(stream).encode()
    with httpx.Client(base_url=double.url, timeout=10) as http:
        with http.stream("POST", "/api/chat", json=stream) as first:
            first_lines = first.iter_lines()
            next(first_lines)
            with socket.create_connection(("127.0.0.1", double.port)) as leaving:  # waits for the slot, then leaves
                leaving.sendall(b"POST /api/chat HTTP/1.1\r\nHost: double\r\nContent-Type: application/json\r\n")
                leaving.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
                double.wait_for(lambda r: r.path == "/api/chat" and r is not double.requests[0])
            double.wait_for(lambda r: r.cancelled)
            third, third_result = in_thread(lambda: http.post("/api/chat", json=stream))
            double.wait_for(lambda r: r.path == "/api/chat" and r is double.requests[-1] and not r.cancelled)
            assert "".join(first_lines).count("tok") == 3
        third.join(10)
    records = [r for r in double.requests if r.path == "/api/chat"]
    assert [r.cancelled for r in records] == [False, True, False]
    assert records[1].chunks_sent == 0 and records[1].status is None
    assert third_result[0].status_code == 200 and third_result[0].text.count("tok") == 4
    # The third's own 3 token gaps (0.6 s) could start only when the first stream had ended.
    assert records[2].finished_at - records[0].finished_at >= 0.55


def test_http_scheduler_knobs_from_the_command_line_survive_a_reset():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama", "--port", "0", "--model", MODEL, "--num-parallel", "3"]
        + ["--max-queue", "7", "--max-loaded-models", "2", "--keep-alive", "90", "--load-duration", "0.25"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        url = proc.stdout.readline().split()[3]
        wanted = {"num_parallel": 3, "max_queue": 7, "max_loaded_models": 2, "keep_alive": "90", "load_duration": 0.25}
        httpx.post(f"{url}/_double/config", json={"num_parallel": 1}).raise_for_status()
        httpx.post(f"{url}/_double/reset").raise_for_status()
        config = httpx.get(f"{url}/_double/config").json()
        assert {k: config[k] for k in wanted} == wanted
        refused = httpx.post(f"{url}/_double/config", json={"keep_alive": "soon"})
        assert refused.status_code == 400 and "soon" in json.dumps(refused.json())
    finally:
        proc.terminate()
        proc.wait(10)
