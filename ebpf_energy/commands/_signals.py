"""SIGINT and SIGTERM as a clean stop, for commands that hold kernel objects.

Inside the block a signal sets a :class:`~ebpf_energy.stop.Stopper`
(waking :meth:`wait`) instead of killing the process half-way through a
syscall, so the ``with`` blocks around it always run and nothing of ours
stays loaded. A second signal while stopping raises KeyboardInterrupt, so an
impatient user is never stuck. (The monitors get the same from ``drive()``.)
"""

import signal

from ebpf_energy.stop import Stopper, install_stop_signals


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


def die_by(signame: str) -> None:
    """End the process *by* the signal that stopped it, after clean-up.

    A shell then sees 128 + n (143 for SIGTERM), as the issue asks of every
    command cut short, and a supervisor sees a death by SIGTERM, which systemd
    counts as a clean stop (an exit status of 143 it would count as a failure).
    """
    import os
    import sys

    sig = signal.Signals[signame]
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    sys.exit(128 + sig)  # only if the signal is blocked
