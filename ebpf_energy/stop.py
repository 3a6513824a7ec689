"""A stop request that wakes a wait, and SIGINT/SIGTERM turned into one.

Apart from :mod:`driver` so a command that only holds kernel objects
(``load``) can stop cleanly without importing the monitors and power models.
"""

from __future__ import annotations

import os
import select
import signal
import threading


class Stopper:
    """A stop request that can interrupt a wait: set from a signal handler or
    another thread, it wakes ``wait()`` at once (a pipe, so ``select`` returns
    even though PEP 475 retries interrupted sleeps)."""

    def __init__(self):
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self.reason: str | None = None

    def set(self, reason: str = "stop") -> None:
        if self.reason is None:
            self.reason = reason
        try:
            os.write(self._w, b"x")
        except (BlockingIOError, OSError):
            pass

    def is_set(self) -> bool:
        return self.reason is not None

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True when a stop was requested."""
        if self.reason is None and timeout > 0:
            select.select([self._r], [], [], timeout)
        return self.reason is not None

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def install_stop_signals(stopper: Stopper):
    """SIGINT/SIGTERM end the run (the summary is still printed); a second
    signal gives up at once. Only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}

    def handler(signum, frame):
        if stopper.is_set():
            raise KeyboardInterrupt
        stopper.set(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)
    return old
