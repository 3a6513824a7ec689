"""The reaper's doorbell: sleep until the monitor's BPF program rings, or stop.

The reaper used to wake ten times a second to look at the death counters,
which on a quiet machine was most of the monitor's own CPU cost. The BPF
program rings a one-page ring buffer (`reap_bell`) at every Nth death on a
CPU instead, and the reaper sleeps in epoll on that ring and on an eventfd
that :meth:`ReapBell.stop` writes, so stopping never waits for a timeout.
"""

import os
import select

from ebpf_energy.loader.ringbuf import RingBuffer


class ReapBell:
    def __init__(self, ring_map):
        self._ring = RingBuffer(ring_map.fd, ring_map.max_entries, lambda view: None)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._epoll = select.epoll()
        self._epoll.register(self._ring.fileno(), select.EPOLLIN)
        self._epoll.register(self._stop_fd, select.EPOLLIN)
        self.stopped = False

    def wait(self, timeout_s: float) -> bool:
        """Sleep until the bell rings, :meth:`stop` or ``timeout_s``; empty
        the ring (the kernel wakes us again only once we have caught up).
        False once stopped."""
        fds = {fd for fd, _ in self._epoll.poll(timeout_s)}
        if self._stop_fd in fds or self.stopped:
            self.stopped = True
            return False
        self._ring.consume()
        return True

    def stop(self):
        self.stopped = True
        os.eventfd_write(self._stop_fd, 1)

    def close(self):
        """After the reaper thread has ended: unmap the ring, close our fds."""
        self._ring.close()
        self._epoll.close()
        os.close(self._stop_fd)
