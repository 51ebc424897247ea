"""The timed loop every benchmark and the GPU check measure with: calls back to back for about a given
time (and at least a few) after untimed warm-up calls, waiting for the device before the clock starts and
stops where the work is asynchronous (a GPU). Standard library only."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class TimedLoop:
    latencies: list[float]  # seconds of each timed call, as the caller saw it return
    seconds: float  # from the first timed call until the last one's work was done

    def per_second(self, items_per_call: int) -> float:
        """Throughput: items (images) per second over the whole loop."""
        return items_per_call * len(self.latencies) / self.seconds


def timed_loop(
    run: Callable[[], object],
    seconds: float,
    *,
    min_calls: int = 3,
    warm_up: int = 1,
    wait: Callable[[], None] | None = None,
) -> TimedLoop:
    """Call `run` `warm_up` times untimed, then back to back for about `seconds` (at least `min_calls`
    times). `wait` blocks until the device has done the work queued so far (torch.cuda.synchronize)."""
    for _ in range(warm_up):
        run()
    if wait is not None:
        wait()
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < min_calls or time.perf_counter() - started < seconds:
        sent = time.perf_counter()
        run()
        latencies.append(time.perf_counter() - sent)
    if wait is not None:
        wait()
    return TimedLoop(latencies, time.perf_counter() - started)
