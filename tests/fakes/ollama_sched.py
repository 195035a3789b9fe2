"""Ollama's scheduler as the double models it: loaded models, their parallel slots, the pending queue, loads,
eviction and keep_alive expiry. Pure asyncio; the clock is injectable so the unit tests can move time by hand.

What is modelled, and where Ollama does it (ollama/ollama server/sched.go unless named; docs/faq.mdx "How does
Ollama handle concurrent requests?" for the settings):

* **Slots.** A loaded model serves ``num_parallel`` requests at once (``OLLAMA_NUM_PARALLEL``, default 1). A
  generation or embedding holds a slot for as long as it runs; the others wait for one in arrival order, without a
  bound (llm/llama_server.go ``s.sem``, a ``golang.org/x/sync/semaphore.Weighted``: a FIFO list of waiters; one
  that leaves is taken out of the list at once). A request that only loads the model (an empty prompt) holds no
  slot.
* **The pending queue.** A request for a model that is not loaded goes to the scheduler, which handles one request
  at a time (``processPending``); up to ``max_queue`` more wait behind it (``OLLAMA_MAX_QUEUE``, default 512: the
  capacity of ``pendingReqCh``), and one beyond that is refused at once with :data:`SERVER_BUSY` (``getRunner``;
  server/routes.go ``handleScheduleError`` makes it a 503). A request for a model that is loaded skips this queue
  (``getRunner``'s fast path), which is why ``OLLAMA_MAX_QUEUE`` never refuses requests waiting for a slot
  (ollama/ollama#7758). A request that leaves keeps its place in this queue until the scheduler reaches it and
  skips it (``pending.ctx.Err()``), as a buffered channel does.
* **Loads.** Loading takes ``load_duration`` seconds (hardware-dependent, not an Ollama setting), during which the
  scheduler handles nothing else ("We can only load one model at a time"). If the requester leaves mid-load the
  load is abandoned (``llama.Load(req.ctx, ...)``) and the model is not loaded.
* **Eviction.** With ``max_loaded_models`` models loaded (``OLLAMA_MAX_LOADED_MODELS``, default 3 x the GPUs, 3 for
  CPU inference; the Mac Mini's one Metal GPU also gives 3) a new model needs one unloaded first:
  ``findRunnerToUnload`` sorts the loaded models by keep_alive duration, then by name (``ByDurationAndName``) and
  takes the first idle one (no request holding it); when none is idle, the first of that order is marked to unload
  as soon as its last request finishes, and the scheduler waits for that (``<-s.unloadedCh``). This is not LRU:
  recency of use plays no part. Ollama also evicts when a model does not fit in memory; the double has no memory.
* **keep_alive.** A model's keep_alive is set when it loads (the request's ``keep_alive``, else ``OLLAMA_KEEP_ALIVE``,
  default 5m; envconfig/config.go ``KeepAlive``) and replaced by every request that gives one
  (``useLoadedRunner``). When its last request finishes it stays loaded that long and is then unloaded; 0 unloads it
  at once, a negative value keeps it forever (api/types.go ``Duration.UnmarshalJSON``: ``math.MaxInt64``). A new
  request stops the timer. ``expires_at`` (``/api/ps``) is set when the model goes idle and left as it was while it
  is busy; before its first idle moment it reads now + keep_alive (``loadedModels``). An unload request (empty prompt,
  ``keep_alive`` 0) unloads the model once idle (``expireRunner``).

Not modelled: reloads when a request's options differ from the loaded ones (``needsReload``), memory estimates,
and embedding models' single slot (the double's models are all alike).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.fakes.ollama_types import parse_duration

# sched.go ErrMaxQueue, answered with status 503 (server/routes.go handleScheduleError). Two spaces, as in Go.
SERVER_BUSY = "server busy, please try again.  maximum pending requests exceeded"
# A negative keep_alive means forever: time.Duration(math.MaxInt64), in seconds (about 292 years).
FOREVER = (2**63 - 1) / 1e9


class ServerBusy(Exception):
    """The pending queue is full (Ollama's 503)."""

    def __init__(self) -> None:
        super().__init__(SERVER_BUSY)


def keep_alive_seconds(value: Any, *, env: bool = False) -> float:
    """A keep_alive in seconds (FOREVER when negative).

    As a request field (api.Duration): a number of seconds or a Go duration string. As ``OLLAMA_KEEP_ALIVE``
    (``env=True``, envconfig.KeepAlive): a Go duration string or else an integer number of seconds.
    """
    if isinstance(value, str):
        try:
            nanoseconds = parse_duration(value)
        except ValueError:
            if not env or not value.lstrip("+-").isdigit():
                raise ValueError(f'keep_alive: "{value}" is not a duration{" or a number of seconds" * env}') from None
            nanoseconds = int(value) * 1_000_000_000
        seconds = nanoseconds / 1e9
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # time.Duration(t * float64(time.Second)) truncates to nanoseconds; beyond int64 the conversion is the CPU's,
        # and the Mac Mini's arm64 saturates (FCVTZS): forever.
        nanoseconds = value * 1e9
        seconds = FOREVER if nanoseconds >= 2**63 else int(nanoseconds) / 1e9
    else:
        raise ValueError(f"keep_alive: {value!r} is neither a number of seconds nor a duration string")
    return FOREVER if seconds < 0 else seconds


@dataclasses.dataclass(frozen=True)
class Settings:
    """Ollama's server settings the scheduler reads; the defaults are Ollama's."""

    num_parallel: int = 1  # OLLAMA_NUM_PARALLEL
    max_queue: int = 512  # OLLAMA_MAX_QUEUE
    max_loaded_models: int = 3  # OLLAMA_MAX_LOADED_MODELS (its default, 0, means 3 per GPU or 3 on CPU)
    keep_alive: float = 300.0  # OLLAMA_KEEP_ALIVE (5m), in seconds; FOREVER for a negative value
    load_duration: float = 0.0  # seconds a model takes to load (the machine's, not a setting)


class Clock:
    """Wall-clock time (``expires_at`` is a date) and asyncio's timers."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, callback)


class FakeClock(Clock):
    """Time that moves only when a test calls :meth:`advance` (which runs every timer that falls due on the way)."""

    @dataclasses.dataclass
    class _Timer:
        callback: Callable[[], None]
        cancelled: bool = False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, FakeClock._Timer]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        done = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            timer.cancel()

    def call_later(self, seconds: float, callback: Callable[[], None]) -> FakeClock._Timer:
        timer = FakeClock._Timer(callback)
        heapq.heappush(self._timers, (self._now + seconds, next(self._order), timer))
        return timer

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
                await settle()
        self._now = target
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every task that can run, run (a test's way to wait for the scheduler to react)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class _Slots:
    """golang.org/x/sync/semaphore.Weighted with weight 1: at most `size` holders, the rest served in arrival order.
    A new request queues behind waiters even when a slot is free (Acquire checks ``s.waiters.Len() == 0``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def free(self) -> bool:
        return self.held < self.size and not self._waiters

    async def acquire(self) -> None:
        if self.free():
            self.held += 1
            return
        ready = asyncio.get_running_loop().create_future()
        self._waiters.append(ready)
        try:
            await ready
        except asyncio.CancelledError:
            if ready.done() and not ready.cancelled():
                self.release()  # granted just as the request left: hand the slot on
            else:
                self._waiters.remove(ready)
                self._notify()
            raise

    def release(self) -> None:
        self.held -= 1
        self._notify()

    def _notify(self) -> None:
        while self._waiters and self.held < self.size:
            self.held += 1
            self._waiters.popleft().set_result(None)


@dataclasses.dataclass(eq=False)
class Runner:
    """A loaded model (sched.go runnerRef)."""

    model: str
    slots: _Slots
    keep_alive: float  # sessionDuration, seconds; <= 0: unload as soon as it is idle
    refs: int = 0  # requests holding it (refCount): waiting for a slot, generating, or just loading it
    expires_at: float | None = None  # set when it goes idle (Go's zero time until then)
    timer: Any = None  # the pending expiry (expireTimer)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """One line of /api/ps."""

    model: str
    expires_at: float  # epoch seconds


@dataclasses.dataclass(eq=False)
class _Pending:
    model: str
    keep_alive: float | None
    given: asyncio.Future[Runner]


class Scheduler:
    """One Ollama server's scheduler. Every method runs on the event loop that serves the requests."""

    def __init__(self, settings: Settings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or Settings()
        self.clock = clock or Clock()
        self.loaded: dict[str, Runner] = {}
        self._pending: collections.deque[_Pending] = collections.deque()
        self._worker: asyncio.Task[None] | None = None  # processPending, while it has work
        self._unloaded = asyncio.Event()

    # -- what a request does --
    @contextlib.asynccontextmanager
    async def use(self, model: str, keep_alive: float | None = None, *, slot: bool = True) -> AsyncIterator[Runner]:
        """Hold `model` (loading it first if needed) and, with `slot`, one of its slots, for the body of the block.

        Raises :class:`ServerBusy` when the request would have to queue for the scheduler and its queue is full.
        """
        runner = await self._runner(model, keep_alive)
        try:
            if slot:
                await runner.slots.acquire()
                try:
                    yield runner
                finally:
                    runner.slots.release()
            else:
                yield runner
        finally:
            self._finished(runner)

    def ready(self, model: str) -> bool:
        """True when a request for `model` would start at once (loaded, a slot free, nobody waiting for one)."""
        runner = self.loaded.get(model)
        return runner is not None and runner.slots.free()

    def expire(self, model: str) -> None:
        """An unload request (sched.go expireRunner): unload `model` now, or when its last request finishes."""
        runner = self.loaded.get(model)
        if runner is None:
            return
        runner.expires_at = self.clock.now()
        self._stop_timer(runner)
        runner.keep_alive = 0
        if runner.refs <= 0:
            self._unload(runner)

    def loaded_models(self) -> list[LoadedModel]:
        """What /api/ps lists: the longest time left first (server/routes.go PsHandler)."""
        now = self.clock.now()
        models = [
            LoadedModel(r.model, r.expires_at if r.expires_at is not None else now + r.keep_alive)
            for r in self.loaded.values()
        ]
        return sorted(models, key=lambda m: -int(m.expires_at))  # stable, by Unix seconds as Go compares them

    # -- getRunner and processPending --
    async def _runner(self, model: str, keep_alive: float | None) -> Runner:
        runner = self.loaded.get(model)
        if runner is not None:
            self._use(runner, keep_alive)
            return runner
        pending = _Pending(model, keep_alive, asyncio.get_running_loop().create_future())
        if self._worker is None:  # the scheduler is waiting for work: it takes this request at once
            self._worker = asyncio.ensure_future(self._process_pending(pending))
        elif len(self._pending) < self.settings.max_queue:
            self._pending.append(pending)
        else:
            raise ServerBusy
        try:
            return await pending.given
        except asyncio.CancelledError:
            if pending.given.done() and not pending.given.cancelled():
                self._finished(pending.given.result())  # given a runner just as the request left
            else:
                pending.given.cancel()  # the scheduler skips it when it comes to it
            raise

    async def _process_pending(self, first: _Pending) -> None:
        try:
            pending: _Pending | None = first
            while pending is not None:
                if not pending.given.done():
                    await self._schedule(pending)
                pending = self._pending.popleft() if self._pending else None
        finally:
            self._worker = None

    async def _schedule(self, pending: _Pending) -> None:
        while not pending.given.done():
            runner = self.loaded.get(pending.model)
            if runner is not None:
                self._use(runner, pending.keep_alive)
                pending.given.set_result(runner)
                return
            if len(self.loaded) < max(self.settings.max_loaded_models, 1):
                await self._load(pending)
                return
            victim = self._runner_to_unload()
            self._unloaded.clear()
            self._stop_timer(victim)
            victim.keep_alive = 0  # unload as soon as its last request finishes
            if victim.refs <= 0:
                self._unload(victim)
            await self._unloaded.wait()

    async def _load(self, pending: _Pending) -> None:
        loading = asyncio.ensure_future(self.clock.sleep(self.settings.load_duration))
        await asyncio.wait({loading, pending.given}, return_when=asyncio.FIRST_COMPLETED)
        if pending.given.done():  # the requester left: the load is abandoned
            loading.cancel()
            return
        keep_alive = self.settings.keep_alive if pending.keep_alive is None else pending.keep_alive
        runner = Runner(pending.model, _Slots(self.settings.num_parallel), keep_alive, refs=1)
        self.loaded[pending.model] = runner
        pending.given.set_result(runner)

    def _runner_to_unload(self) -> Runner:
        # sched.go findRunnerToUnload with ByDurationAndName: shortest keep_alive first, then by name; an idle one
        # if any, else the first (whose last request is then waited for).
        ordered = sorted(self.loaded.values(), key=lambda r: (r.keep_alive, r.model))
        return next((r for r in ordered if r.refs <= 0), ordered[0])

    # -- useLoadedRunner and processCompleted --
    def _use(self, runner: Runner, keep_alive: float | None) -> None:
        runner.refs += 1
        self._stop_timer(runner)
        if keep_alive is not None:
            runner.keep_alive = keep_alive

    def _finished(self, runner: Runner) -> None:
        runner.refs -= 1
        if runner.refs > 0 or self.loaded.get(runner.model) is not runner:
            return
        if runner.keep_alive <= 0:
            self._unload(runner)
        else:
            runner.expires_at = self.clock.now() + runner.keep_alive
            if runner.keep_alive < FOREVER:  # forever: no timer (one of ~292 years would never fire anyway)
                runner.timer = self.clock.call_later(runner.keep_alive, lambda: self._expired(runner))

    def _expired(self, runner: Runner) -> None:
        runner.timer = None
        if runner.refs <= 0:
            self._unload(runner)

    @staticmethod
    def _stop_timer(runner: Runner) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None

    def _unload(self, runner: Runner) -> None:
        self._stop_timer(runner)
        if self.loaded.get(runner.model) is runner:
            del self.loaded[runner.model]
            self._unloaded.set()
