"""Dynamic batching: concurrent requests to one model answered by shared forward passes, and
large requests split so that they cannot hold small ones back.

The first waiting request holds the batch open for `wait` seconds (a few milliseconds) or until
`max_batch` inputs are waiting; one `predict` call then serves the batch on the model's own
worker thread, so the event loop never runs a model and one model's slow batch never delays
another model's requests. A batch holds at most `max_batch` inputs, shared fairly: every
waiting request gets an equal share of the slots (what one leaves unused goes to the next), so
a request of 64 inputs is served over several batches while a one-input request that arrives
meanwhile rides in the next batch instead of waiting for all of them (TorchServe's and Triton's
dynamic batchers split by a maximum batch size the same way).

A batch that fails is served again request by request, so one bad request fails only itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Pending:
    """One request's inputs, how far they have been served, and the answers so far."""

    inputs: list[Any]
    future: asyncio.Future
    results: list[Any] = field(default_factory=list)

    @property
    def served(self) -> int:
        return len(self.results)

    @property
    def left(self) -> int:
        return len(self.inputs) - len(self.results)


Slice = tuple[Pending, int, int]  # a request's inputs [start, end) in one batch


def fair_slices(pending: list[Pending], max_batch: int) -> list[Slice]:
    """At most `max_batch` inputs from the waiting requests, in arrival order: each gets an
    equal share of the slots, and the slots a small request leaves unused go to the larger
    ones (water-filling: the smallest requests are served whole first)."""
    takes: dict[int, int] = {}
    room = max_batch
    by_size = sorted(range(len(pending)), key=lambda i: pending[i].left)
    for k, i in enumerate(by_size):
        share = -(-room // (len(by_size) - k))  # ceil: the rest is spread over the rest
        takes[i] = min(pending[i].left, share)
        room -= takes[i]
    return [(p, p.served, p.served + takes[i]) for i, p in enumerate(pending) if takes[i] > 0]


class Batcher:
    def __init__(self, predict: Callable[[list[Any]], list[Any]], executor: Executor,
                 max_batch: int = 32, wait: float = 0.005):
        self.predict, self.executor = predict, executor
        self.max_batch, self.wait = max_batch, wait
        self.requests = self.batches = 0  # served so far (the API reports them)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Pending] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, inputs: list[Any]) -> list[Any]:
        """The predictions for `inputs`, one per input, in order."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (a restarted server)
            self._loop, self._pending, self._arrived = loop, [], asyncio.Event()
            self._worker = loop.create_task(self._run())
        future = loop.create_future()
        self._pending.append(Pending(list(inputs), future))
        self._arrived.set()  # type: ignore[union-attr]
        return await future

    def _waiting(self) -> int:
        self._pending = [p for p in self._pending if not p.future.done()]  # answered or abandoned
        return sum(p.left for p in self._pending)

    async def _run(self) -> None:
        loop, arrived = self._loop, self._arrived
        assert loop is not None and arrived is not None
        while True:
            while not self._waiting():
                arrived.clear()
                await arrived.wait()
            deadline = loop.time() + self.wait
            while self._waiting() < self.max_batch and (left := deadline - loop.time()) > 0:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), left)
                except TimeoutError:
                    break
            await self._serve(fair_slices(self._pending, self.max_batch))

    async def _serve(self, slices: list[Slice]) -> None:
        flat = [x for p, start, end in slices for x in p.inputs[start:end]]
        try:
            results = await self._loop.run_in_executor(self.executor, self.predict, flat)  # type: ignore[union-attr]
        except Exception as e:
            if len(slices) > 1:
                for one in slices:
                    await self._serve([one])
                return
            future = slices[0][0].future
            if not future.done():
                future.set_exception(e)  # the request fails whole; its other slices are dropped
            return
        self.batches += 1
        at = 0
        for p, start, end in slices:
            p.results += results[at : at + end - start]
            at += end - start
            if p.left == 0 and not p.future.done():  # the client may have gone
                self.requests += 1
                p.future.set_result(p.results)
