"""SIGINT and SIGTERM as a clean stop, for commands that hold kernel objects.

Inside the block a signal sets the driver's :class:`~ebpf_energy.driver.Stopper`
(waking :meth:`wait`) instead of killing the process half-way through a
syscall, so the ``with`` blocks around it always run and nothing of ours
stays loaded. A second signal while stopping raises KeyboardInterrupt, so an
impatient user is never stuck. (The monitors get the same from ``drive()``.)
"""

import signal

from ebpf_energy.driver import Stopper, install_stop_signals


class TerminateOnSignals:
    def __enter__(self):
        self.stopper = Stopper()
        self._old = install_stop_signals(self.stopper)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self.stopper.close()

    @property
    def stopped(self):
        return self.stopper.is_set()

    def wait(self, seconds=None) -> bool:
        """Sleep up to ``seconds`` (None: until a signal); True when a signal came."""
        while not self.stopper.wait(3600.0 if seconds is None else seconds):
            if seconds is not None:
                return False
        return True
