"""At most one request made ahead of time, for a paging loop that asks for page k+1 while it writes page k."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class FetchAhead:
    """At most one request made ahead of time; its answer is used only when the next request is that one.

    A paging loop asks for page k+1 while it writes page k. If the write fails or the cursor moved, the next
    request differs and the early one is dropped: fetching ahead never changes what is written.
    """

    def __init__(self, fetch: Callable[[Any], Awaitable[Any]]) -> None:
        self.fetch = fetch
        self._ahead: tuple[Any, asyncio.Task[Any]] | None = None

    async def get(self, request: Any) -> Any:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == request:
            return await ahead[1]
        if ahead is not None:
            ahead[1].cancel()
        return await self.fetch(request)

    def start(self, request: Any) -> None:
        self.close()
        task = asyncio.create_task(self.fetch(request))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved even if dropped
        self._ahead = (request, task)

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None
