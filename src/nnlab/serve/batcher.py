"""Dynamic batching: concurrent requests to one model answered by one forward pass.

The first waiting request holds the batch open for `wait` seconds (a few milliseconds) or until
`max_batch` inputs have arrived; one `predict` call then serves them all on the model's worker
thread, so the event loop never runs the model. A batch that fails is served again request by
request, so one bad request cannot fail the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

Item = tuple[list[Any], asyncio.Future]


class Batcher:
    def __init__(self, predict: Callable[[list[Any]], list[Any]], executor: Executor,
                 max_batch: int = 32, wait: float = 0.005):
        self.predict, self.executor = predict, executor
        self.max_batch, self.wait = max_batch, wait
        self.requests = self.batches = 0  # served so far (the API reports them)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Item] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, inputs: list[Any]) -> list[Any]:
        """The predictions for `inputs`, one per input, in order."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (a restarted server)
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run())
        future = loop.create_future()
        await self._queue.put((inputs, future))  # type: ignore[union-attr]
        return await future

    async def _run(self) -> None:
        loop, queue = self._loop, self._queue
        assert loop is not None and queue is not None
        while True:
            items = [await queue.get()]
            count = len(items[0][0])
            deadline = loop.time() + self.wait
            while count < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                items.append(item)
                count += len(item[0])
            await self._serve(items)

    async def _serve(self, items: list[Item]) -> None:
        flat = [x for inputs, _ in items for x in inputs]
        try:
            results = await self._loop.run_in_executor(self.executor, self.predict, flat)  # type: ignore[union-attr]
        except Exception as e:
            if len(items) > 1:
                for item in items:
                    await self._serve([item])
                return
            if not items[0][1].done():
                items[0][1].set_exception(e)
            return
        self.batches += 1
        self.requests += len(items)
        at = 0
        for inputs, future in items:
            if not future.done():  # the client may have gone
                future.set_result(results[at : at + len(inputs)])
            at += len(inputs)
