"""The mmap ring-buffer consumer against records real programs write."""

import os
import struct
import threading
import time

import pytest

from ebpf_energy.loader import syscall, uapi
from ebpf_energy.loader.asm import R0, R1, R2, R3, R4, R6, R10, Asm, reg
from ebpf_energy.loader.attach import attach_raw_tracepoint
from ebpf_energy.loader.errors import LoaderError
from ebpf_energy.loader.maps import Map
from ebpf_energy.loader.ringbuf import BUSY, DISCARD, RingBuffer, RingBufferPoller

import loader_progs as lp

PAGE = os.sysconf("SC_PAGE_SIZE")


class Producer:
    """A ring buffer plus a socket-filter program that writes one numbered record
    (``size`` bytes, every 4th discarded) per BPF_PROG_TEST_RUN repetition."""

    def __init__(self, ring_size, size, discard_mask=3):
        self.size = size
        self.discard_mask = discard_mask
        self.ring = Map.create("rb", uapi.BPF_MAP_TYPE_RINGBUF, 0, 0, ring_size)
        self.seq = Map.create("seq", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1)
        self.prog = lp.load_socket_filter(
            lp.ringbuf_producer_insns(self.ring.fd, self.seq.fd, size, discard_mask), "rbprod")
        self.next_seq = 0

    def produce(self, n):
        """Run n times; returns the records that should arrive (discards left out)."""
        lp.run(self.prog, repeat=n)
        want = [lp.expected_record(s, self.size) for s in range(self.next_seq, self.next_seq + n)
                if self.discard_mask is None or s & self.discard_mask != self.discard_mask]
        self.next_seq += n
        return want

    def close(self):
        os.close(self.prog)
        self.seq.close()
        self.ring.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _record_span(size):
    return (size + 8 + 7) & ~7


@pytest.mark.kernel
@pytest.mark.parametrize("size", [8, 13, 24, 61])
def test_records_arrive_byte_exact_in_order_and_discards_are_skipped(size):
    before = lp.open_fds()
    with Producer(1 << 16, size) as p, RingBuffer(p.ring.fd, 1 << 16) as rb:
        want = p.produce(100)
        assert len(want) == 75
        # every record, kept or discarded, takes its aligned span of the ring
        assert rb.producer_pos == 100 * _record_span(size)
        got = []
        n = rb.consume(lambda v: got.append(bytes(v)))
        assert n == 75 and got == want
        assert rb.consumer_pos == rb.producer_pos == 100 * _record_span(size)
        assert rb.consume(lambda v: got.append(v)) == 0
    assert lp.open_fds() == before


@pytest.mark.kernel
def test_callback_can_stop_and_consumer_position_advances_per_record():
    span = _record_span(16)
    with Producer(1 << 16, 16, discard_mask=None) as p, RingBuffer(p.ring.fd, 1 << 16) as rb:
        want = p.produce(10)
        got = []
        assert rb.consume(lambda v: got.append(bytes(v)) or len(got) == 3) == 3
        assert rb.consumer_pos == 3 * span
        assert rb.available() == 7 * span
        assert rb.consume(lambda v: got.append(bytes(v))) == 7
        assert got == want


@pytest.mark.kernel
def test_consume_batch_matches_and_survives_wraparound():
    ring = PAGE  # the smallest ring: many wraps
    with Producer(ring, 40) as p, RingBuffer(p.ring.fd, ring) as rb:
        total = 0
        for rnd in range(40):
            want = p.produce(50)            # 50 * 48 bytes < one 4 KiB ring
            got = rb.consume_batch()
            assert [bytes(r) for r in got] == want, f"round {rnd}"
            total += 50 * _record_span(40)
            assert rb.consumer_pos == total
        assert total > 20 * ring           # we went round many times
        want = p.produce(10)
        first = rb.consume_batch(max_records=4)
        rest = rb.consume_batch()
        assert [bytes(r) for r in first + rest] == want


@pytest.mark.kernel
def test_full_ring_keeps_the_oldest_records():
    with Producer(PAGE, 56, discard_mask=None) as p, RingBuffer(p.ring.fd, PAGE) as rb:
        want = p.produce(200)              # 64 bytes each; the rest are dropped
        got = rb.consume_batch()
        fit = (PAGE - 1) // 64             # the kernel keeps producer - consumer <= size - 1
        assert len(got) == fit and [bytes(r) for r in got] == want[:fit]


@pytest.mark.kernel
def test_poll_waits_then_wakes_on_data():
    with Producer(1 << 16, 16, discard_mask=None) as p, RingBuffer(p.ring.fd, 1 << 16) as rb:
        got = []
        rb.callback = lambda v: got.append(bytes(v))
        t0 = time.monotonic()
        assert rb.poll(100) == 0
        assert time.monotonic() - t0 >= 0.09
        th = threading.Timer(0.05, lambda: p.produce(3))
        th.start()
        t0 = time.monotonic()
        n = rb.poll(5000)
        th.join()
        assert time.monotonic() - t0 < 2.0
        n += rb.consume()
        assert n == 3 and len(got) == 3


@pytest.mark.kernel
def test_raw_tracepoint_program_streams_real_events():
    """A raw_tp program on sys_enter writes (tgid, syscall nr) for our getppid calls."""
    with Map.create("events", uapi.BPF_MAP_TYPE_RINGBUF, 0, 0, 1 << 16) as ring:
        a = Asm()
        a.ldx(8, R6, R1, 8)
        a.jmp("jne", R6, lp.NR_GETPPID, "out")
        a.call(uapi.FN_get_current_pid_tgid)
        a.rsh(R0, 32)
        a.jmp("jne", R0, os.getpid(), "out")
        a.stx(8, R10, -16, R0)
        a.stx(8, R10, -8, R6)
        a.ld_map_fd(R1, ring.fd)
        a.mov(R2, reg(R10))
        a.add(R2, -16)
        a.mov(R3, 16)
        a.mov(R4, 0)
        a.call(uapi.FN_ringbuf_output)
        a.label("out")
        a.mov(R0, 0)
        a.exit()
        prog, _ = syscall.prog_load(uapi.BPF_PROG_TYPE_RAW_TRACEPOINT, a.assemble(), "GPL", name="rbraw")
        try:
            got = []
            with RingBufferPoller() as poller:
                poller.add(ring.fd, 1 << 16, lambda v: got.append(struct.unpack("<QQ", v)))
                with attach_raw_tracepoint(prog, "sys_enter"):
                    for _ in range(12):
                        os.getppid()
                    deadline = time.monotonic() + 2
                    while len(got) < 12 and time.monotonic() < deadline:
                        poller.poll(100)
        finally:
            os.close(prog)
        assert got == [(os.getpid(), lp.NR_GETPPID)] * 12


@pytest.mark.kernel
def test_poller_drains_several_rings():
    with Producer(1 << 14, 16) as p1, Producer(1 << 14, 24) as p2:
        a, b = [], []
        with RingBufferPoller() as poller:
            poller.add(p1.ring.fd, 1 << 14, lambda v: a.append(bytes(v)))
            poller.add(p2.ring.fd, 1 << 14, lambda v: b.append(bytes(v)))
            w1, w2 = p1.produce(8), p2.produce(5)
            assert poller.poll(1000) == len(w1) + len(w2)
        assert a == w1 and b == w2


def _fake(max_entries=64):
    cons = bytearray(PAGE)
    prod = bytearray(PAGE + 2 * max_entries)
    return cons, prod, RingBuffer.over_memory(cons, prod, max_entries)


def _put(prod, pos, payload, flags=0, max_entries=64):
    off = PAGE + (pos & (max_entries - 1))
    struct.pack_into("<II", prod, off, len(payload) | flags, 0)
    prod[off + 8:off + 8 + len(payload)] = payload
    return pos + ((len(payload) + 8 + 7) & ~7)


def test_parser_stops_at_busy_record_and_resumes_when_committed():
    """A record still being written (BUSY) blocks the ones after it, even if those
    are complete; a program cannot leave one behind, so this uses plain memory."""
    cons, prod, rb = _fake()
    pos = _put(prod, 0, b"first")
    busy_at = pos
    pos = _put(prod, pos, b"second", BUSY)
    pos = _put(prod, pos, b"third")
    struct.pack_into("<Q", prod, 0, pos)
    got = []
    assert rb.consume(lambda v: got.append(bytes(v))) == 1
    assert got == [b"first"] and rb.consumer_pos == busy_at == struct.unpack_from("<Q", cons)[0]
    assert rb.consume_batch() == []      # still blocked
    struct.pack_into("<I", prod, PAGE + busy_at, len(b"second"))  # committed
    assert [bytes(r) for r in rb.consume_batch()] == [b"second", b"third"]
    assert rb.consumer_pos == pos


def test_parser_skips_discarded_and_handles_wrapped_position():
    cons, prod, rb = _fake()
    struct.pack_into("<Q", cons, 0, 48)   # start near the end of a 64-byte ring
    pos = _put(prod, 48, b"x" * 4, DISCARD)
    pos = _put(prod, pos, b"wrapped!")    # starts at offset 0 after wrapping
    struct.pack_into("<Q", prod, 0, pos)
    got = []
    assert rb.consume(lambda v: got.append(bytes(v))) == 1
    assert got == [b"wrapped!"] and rb.consumer_pos == pos == 48 + 16 + 16


def test_ring_size_must_be_a_power_of_two():
    with pytest.raises(LoaderError, match="power of two"):
        RingBuffer(-1, 3000)
