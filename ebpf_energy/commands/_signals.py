"""SIGINT and SIGTERM as a clean stop, for commands that hold kernel objects.

Inside the block, a signal sets a flag (waking :meth:`wait`) instead of
killing the process half-way through a syscall, so the ``with`` blocks
around it always run and nothing of ours stays loaded. A second signal while
stopping raises KeyboardInterrupt, so an impatient user is never stuck.
"""

import signal
import threading


class TerminateOnSignals:
    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self._event = threading.Event()
        self._old = {}
        self.received = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def _handle(self, signum, frame):
        if self._event.is_set():
            raise KeyboardInterrupt
        self.received = signum
        self._event.set()

    @property
    def stopped(self):
        return self._event.is_set()

    def wait(self, seconds=None) -> bool:
        """Sleep up to ``seconds`` (None: until a signal); True when a signal came."""
        return self._event.wait(seconds)
