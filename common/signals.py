"""Ctrl-C (SIGINT) and `kill PID` (SIGTERM): how a long-running command hears that it should stop.

Two ways, one for each kind of command. Servers stop at once: `stop_signals_interrupt` turns both signals
into KeyboardInterrupt, also where the shell that started us left SIGINT ignored (a background job without
job control). Training stops between steps: `StopRequest` only raises a flag the loop checks, so the
checkpoint it writes is whole; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise KeyboardInterrupt; the old handlers come back after."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class StopRequest:
    """Ctrl-C or SIGTERM asks the loop to stop after the current step; a second Ctrl-C stops at once,
    unless `second_ctrl_c_stops` is False: a torchrun worker gets the terminal's Ctrl-C and torchrun's
    forwarded copy of it, two signals from one key press, and torchrun itself ends workers that linger."""

    def __init__(self, *, second_ctrl_c_stops: bool = True) -> None:
        self.requested = False
        self.second_ctrl_c_stops = second_ctrl_c_stops
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT and self.second_ctrl_c_stops:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
