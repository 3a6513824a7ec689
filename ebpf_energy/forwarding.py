"""Waiting for ``run``'s command while passing on the signals sent to ``run``.

A terminal's Ctrl-C reaches the whole foreground process group, the
command's tree with it, and ``run`` stays to report. A ``kill -INT`` aimed
at ``run`` alone reached nobody else: it was ignored and the command ran on.
Now it is passed to every process of the tree (where Ctrl-C would have
gone), but a terminal's SIGINT is not sent twice: a second SIGINT makes many
programs give up their own clean-up. Only the sender's ``si_code`` tells
the two apart (SI_KERNEL for the terminal), and only ``sigwaitinfo`` shows
it, so the signals are blocked and waited for, SIGCHLD with them for the
command's end. SIGTERM goes to the command, as before.
"""

import os
import signal
import threading
from typing import Callable, Iterable, Optional

SI_KERNEL = 0x80  # sent by the kernel itself (a terminal's ^C), not by kill(2)
PASSED = (signal.SIGINT, signal.SIGTERM)


class ForwardingWait:
    """``with`` it around starting the command, then :meth:`wait` for it.

    ``tree()`` lists the pids a SIGINT goes to (the run's cgroup); without
    it, or when it is empty, the command alone gets it.
    """

    def __init__(self, tree: Optional[Callable[[], Iterable[int]]] = None):
        self.tree = tree
        self.pid: Optional[int] = None
        self._done = False
        self._early = []
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in PASSED:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        self._done = True
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handler(self, signum, frame):
        """A signal before the command started, or one another thread took
        (the signals are blocked in this thread only): passed on all the same."""
        if self._done:
            return  # the command has ended: we are only reporting
        if self.pid is None:
            self._early.append(signum)
        else:
            self._pass(signum)

    def _pass(self, signum: int) -> None:
        pids = list(self.tree() or ()) if signum == signal.SIGINT and self.tree is not None else []
        for pid in pids or [self.pid]:
            try:
                os.kill(pid, signum)
            except OSError:
                pass  # it has just ended

    def wait(self, pid: int):
        """``(status, rusage)`` of ``pid``, as ``os.wait4``, passing signals on meanwhile.

        A thread waits for the command and tells this one by a SIGCHLD of
        its own: the kernel's SIGCHLD may be taken, and dropped, by any
        other thread (the sampler's), when this one is not in sigwaitinfo."""
        self.pid = pid
        for s in self._early:
            self._pass(s)
        if not self._old:  # not the main thread: the signals are not ours to handle
            _, status, ru = os.wait4(pid, 0)
            return status, ru
        watched = {*PASSED, signal.SIGCHLD}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            ended = []
            me = threading.get_ident()

            def reap():  # started with the signals blocked: it takes none of them
                try:
                    ended.append(os.wait4(pid, 0))
                except OSError as e:  # no such child: said by the caller, not hung on
                    ended.append(e)
                signal.pthread_kill(me, signal.SIGCHLD)

            threading.Thread(target=reap, name="ebpf-energy-run-wait", daemon=True).start()
            while not ended:
                # at most a second: a signal another thread took while this
                # one was not waiting is passed on by _handler meanwhile
                info = signal.sigtimedwait(watched, 1.0)
                if info is None or info.si_signo == signal.SIGCHLD:
                    continue
                if info.si_signo == signal.SIGINT and info.si_code == SI_KERNEL:
                    continue  # the terminal's ^C: the command's group has it already
                self._pass(info.si_signo)
            self._done = True
            if isinstance(ended[0], OSError):
                raise ended[0]
            _, status, ru = ended[0]
            return status, ru
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
