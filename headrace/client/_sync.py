"""Running the async client from synchronous code without touching the caller's event loop.

Where no loop runs in this thread, `asyncio.run`; where one does (a notebook), a helper thread
with its own loop. Streams always run in a helper thread and hand events over a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(1, thread_name_prefix="headrace-client") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


_ITEM, _END, _ERROR = "item", "end", "error"


class _Pump:
    """Drives an async iterator on its own thread and loop; items come out of `queue`."""

    def __init__(self, factory: Callable[[], AsyncIterator[T]]) -> None:
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._factory = factory
        self._loop = asyncio.new_event_loop()
        self._task = self._loop.create_task(self._run())
        self._thread = threading.Thread(target=self._main, name="headrace-stream", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(asyncio.wait([self._task]))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    async def _run(self) -> None:
        iterator = self._factory()
        try:
            async for item in iterator:
                self.queue.put((_ITEM, item))
            self.queue.put((_END, None))
        except asyncio.CancelledError:
            self.queue.put((_END, None))
        except BaseException as e:  # handed to the consuming thread, which raises it
            self.queue.put((_ERROR, e))
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join()


def iterate_in_thread(factory: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """A plain iterator over an async one. Closing it early (break) stops the async side."""
    pump = _Pump(factory)
    try:
        while True:
            kind, value = pump.queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        pump.close()
