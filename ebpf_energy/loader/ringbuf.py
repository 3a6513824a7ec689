"""Consumer side of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF), via mmap.

Layout the kernel exposes on the map fd:
  offset 0, one page, read-write:         consumer_pos (u64), written by us
  offset page, one page, read-only:       producer_pos (u64), written by the kernel
  offset 2*page, 2*max_entries, read-only: the data area, mapped twice in a row
                                           so a record that wraps is contiguous.
Each record: 8-byte header (u32 len | BUSY bit 31 | DISCARD bit 30, u32 pad),
then ``len`` bytes, the whole rounded up to 8. A BUSY record is still being
written: stop there (never skip it). DISCARD records advance the position but
are not delivered. After a drain we publish consumer_pos and read producer_pos
again, since the producer may have added records meanwhile (and only wakes us
when it sees we had caught up).

Aligned 8-byte reads through ``memoryview.cast('Q')`` are single loads, so
positions are never torn on x86-64 and arm64.
"""

import mmap
import select

from . import explain, uapi
from .errors import LoaderError

BUSY = uapi.BPF_RINGBUF_BUSY_BIT
DISCARD = uapi.BPF_RINGBUF_DISCARD_BIT
LEN_MASK = DISCARD - 1
HDR = uapi.BPF_RINGBUF_HDR_SZ


class RingBuffer:
    """Reads records of one ring buffer map.

    ``callback(memoryview) -> truthy to stop`` gets each record's data; the view
    is released after the callback returns (copy it with ``bytes(view)`` to keep it).
    """

    def __init__(self, map_fd, max_entries, callback=None):
        if max_entries <= 0 or max_entries & (max_entries - 1):
            raise LoaderError(f"ring buffer size {max_entries} is not a power of two")
        page = self._page = mmap.PAGESIZE
        self.map_fd = map_fd
        self.max_entries = max_entries
        self.callback = callback
        self._mask = max_entries - 1
        self._epoll = None
        try:
            self._cons_mm = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod_mm = mmap.mmap(map_fd, page + 2 * max_entries, mmap.MAP_SHARED, mmap.PROT_READ,
                                      offset=page)
        except OSError as e:
            self._cons_mm = self._prod_mm = None
            self._release()
            raise LoaderError(f"cannot mmap ring buffer (map fd {map_fd}, {max_entries} bytes): {e}") from None
        self._views()
        explain.trace("ringbuf", f"mmap ring buffer fd {map_fd}: consumer page rw, producer page + "
                      f"2x{max_entries} bytes data ro")

    def _views(self):
        self._cons = memoryview(self._cons_mm).cast("Q")
        pm = memoryview(self._prod_mm)
        self._prod = pm[:8].cast("Q")
        self._data = pm[self._page:]
        self._hdr = self._data.cast("I")
        self._pm = pm

    @classmethod
    def over_memory(cls, consumer_page, producer_pages, max_entries, callback=None):
        """A consumer over plain writable buffers laid out like the kernel's mapping
        (for exercising the record parser on states a program cannot leave behind,
        such as a BUSY record)."""
        self = cls.__new__(cls)
        self.map_fd = -1
        self.max_entries = max_entries
        self.callback = callback
        self._mask = max_entries - 1
        self._epoll = None
        self._page = len(consumer_page)
        self._cons_mm, self._prod_mm = consumer_page, producer_pages
        self._views()
        return self

    # --- positions
    @property
    def consumer_pos(self):
        return self._cons[0]

    @property
    def producer_pos(self):
        return self._prod[0]

    def available(self):
        """Bytes written (or being written) and not yet consumed."""
        return self._prod[0] - self._cons[0]

    # --- draining
    def consume(self, callback=None):
        """Deliver the committed records to the callback; returns how many were delivered.

        Stops at a BUSY record, when the callback returns true, or after one ring's
        worth of data (so a producer as fast as we are cannot keep us here forever).
        """
        cb = callback or self.callback
        if cb is None:
            raise LoaderError("RingBuffer.consume needs a callback (or use consume_batch)")
        cons_v, prod_v, hdr, data, mask = self._cons, self._prod, self._hdr, self._data, self._mask
        cons = cons_v[0]
        end = cons + self.max_entries  # at most one ring's worth per call: a fast producer can't pin us here
        n = 0
        while True:
            prod = prod_v[0]
            if prod > end:
                prod = end
            if cons >= prod:
                return n
            while cons < prod:
                off = cons & mask
                h = hdr[off >> 2]
                if h & BUSY:
                    cons_v[0] = cons
                    return n
                ln = h & LEN_MASK
                nxt = cons + ((ln + HDR + 7) & ~7)
                if not h & DISCARD:
                    n += 1
                    view = data[off + HDR:off + HDR + ln]
                    try:
                        stop = cb(view)
                    finally:
                        view.release()
                    if stop:
                        cons_v[0] = nxt
                        return n
                cons = nxt
            cons_v[0] = cons

    def consume_batch(self, max_records=None):
        """Fast path: return the committed records' data as a list of ``bytes``.

        Each record costs one header read and one slice of the mapping (a single
        copy), so the records stay valid after the call and the ring space is
        handed back at once. ``max_records`` bounds one call's work; one call never
        takes more than one ring's worth of data.
        """
        cons_v, prod_v, hdr, mask, mm = self._cons, self._prod, self._hdr, self._mask, self._prod_mm
        base = self._page + HDR
        cons = cons_v[0]
        end = cons + self.max_entries  # at most one ring's worth per call (bounded time and memory)
        out = []
        add = out.append
        left = -1 if max_records is None else max_records
        while left:
            prod = prod_v[0]
            if prod > end:
                prod = end
            if cons >= prod:
                break
            while cons < prod and left:
                off = cons & mask
                h = hdr[off >> 2]
                if h & BUSY:
                    cons_v[0] = cons
                    return out
                ln = h & LEN_MASK
                if not h & DISCARD:
                    o = base + off
                    add(mm[o:o + ln])
                    left -= 1
                cons += (ln + HDR + 7) & ~7
            cons_v[0] = cons
        return out

    # --- waiting
    def fileno(self):
        return self.map_fd

    def poll(self, timeout_ms=-1):
        """Drain, and if nothing was there wait up to ``timeout_ms`` (-1: forever) for data."""
        n = self.consume()
        if n:
            return n
        self.wait(timeout_ms)
        return self.consume()

    def wait(self, timeout_ms=-1):
        """Block until the kernel signals data (or the timeout); True if it did.
        Pairs with consume_batch() for a poll loop without callbacks."""
        if self._epoll is None:
            self._epoll = select.epoll()
            self._epoll.register(self.map_fd, select.EPOLLIN)
        return bool(self._epoll.poll(-1 if timeout_ms is None or timeout_ms < 0 else timeout_ms / 1000.0))

    # --- lifetime
    def _release(self):
        for name in ("_hdr", "_data", "_prod", "_cons", "_pm"):
            v = getattr(self, name, None)
            if v is not None:
                try:
                    v.release()
                except BufferError:
                    pass
                setattr(self, name, None)
        for name in ("_cons_mm", "_prod_mm"):
            m = getattr(self, name, None)
            if m is not None:
                try:
                    if hasattr(m, "close"):
                        m.close()
                except BufferError:
                    pass  # a caller still holds a view: unmapped when it is dropped
                setattr(self, name, None)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def close(self):
        """Unmap (the map fd itself belongs to the caller). Idempotent."""
        if getattr(self, "_cons_mm", None) is None and getattr(self, "_prod_mm", None) is None:
            return
        self._release()
        explain.trace("close", f"ring buffer fd {self.map_fd} unmapped")

    @property
    def closed(self):
        return self._prod_mm is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RingBufferPoller:
    """Several ring buffers behind one epoll: ``add()`` each, then ``poll()``."""

    def __init__(self):
        self._rings = {}
        self._epoll = select.epoll()

    def add(self, map_fd, max_entries, callback):
        rb = RingBuffer(map_fd, max_entries, callback)
        self._rings[map_fd] = rb
        self._epoll.register(map_fd, select.EPOLLIN)
        return rb

    def consume(self):
        return sum(rb.consume() for rb in self._rings.values())

    def poll(self, timeout_ms=-1):
        """Drain all; if none had data, wait for any, then drain the ready ones."""
        n = self.consume()
        if n:
            return n
        events = self._epoll.poll(-1 if timeout_ms is None or timeout_ms < 0 else timeout_ms / 1000.0)
        return sum(self._rings[fd].consume() for fd, _ in events if fd in self._rings)

    def close(self):
        for rb in self._rings.values():
            rb.close()
        self._rings.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
