"""The publisher: posts at a fixed offered rate over HTTP, round-robin over the servers.

Post i of a step is due at t0 + i/rate (an open-loop schedule: a slow response does not delay
the next post). At most `max_inflight` requests are outstanding; when the servers are so slow
that this bound is reached, the publisher waits, the sent rate falls below the offered rate and
the step counts as saturated.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass
class PublishResult:
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    response_ms: list[float] = field(default_factory=list)
    send_secs: float = 0.0  # from the first post to the last one sent


class Publisher:
    def __init__(self, http: aiohttp.ClientSession, urls: list[str], channel_id: str, token: str, *,
                 message_bytes: int = 64, max_inflight: int = 64) -> None:
        self.http = http
        self.urls = [f"{u}/api/v1/channels/{channel_id}/posts" for u in urls]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.max_inflight = max_inflight
        self.message_bytes = message_bytes
        self._n = 0

    def _message(self, step: int, i: int) -> str:
        head = f"bench step {step} post {i} "
        return head + "x" * max(0, self.message_bytes - len(head))

    async def post_one(self, step: int, i: int, result: PublishResult) -> None:
        url = self.urls[self._n % len(self.urls)]
        self._n += 1
        started = time.perf_counter()
        try:
            async with self.http.post(url, json={"message": self._message(step, i)}, headers=self.headers) as resp:
                await resp.read()
                if resp.status == 201:
                    result.ok += 1
                else:
                    result.errors[str(resp.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors[type(exc).__name__] += 1
        result.response_ms.append((time.perf_counter() - started) * 1000)

    async def run(self, step: int, rate: float, duration: float) -> PublishResult:
        loop = asyncio.get_running_loop()
        result = PublishResult()
        total = max(1, round(rate * duration))
        slots = asyncio.Semaphore(self.max_inflight)
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            try:
                await self.post_one(step, i, result)
            finally:
                slots.release()

        t0 = loop.time()
        for i in range(total):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            task = loop.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            result.sent += 1
        result.send_secs = loop.time() - t0
        if tasks:
            await asyncio.gather(*tasks)
        return result
