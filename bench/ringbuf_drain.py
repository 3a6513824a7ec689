#!/usr/bin/env python3
"""Ring-buffer drain rate: records parsed per second by the Python consumer.

A hand-assembled socket-filter program (no clang needed) calls
bpf_ringbuf_output() 64 times per run with a 16-byte record (ktime, pattern);
BPF_PROG_TEST_RUN with ``repeat`` fills the ring. Each round fills the ring,
then times one drain. Compared, on the same records:
  raw            a bare CPython header walk (no record objects): the ceiling
  consume+cb     RingBuffer.consume(callback) and the callback unpacks (ts, pattern)
  batch          RingBuffer.consume_batch() (a bytes object per record)
  batch+decode   consume_batch() then struct unpack of every record
And a streaming run: a producer thread keeps the program running while the
consumer polls with epoll and decodes, for --seconds.

Needs root. Usage: python3 bench/ringbuf_drain.py [--ring-mb 16] [--rounds 5] [--json]
"""

import argparse
import json
import os
import statistics
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ebpf_energy.loader import syscall, uapi  # noqa: E402
from ebpf_energy.loader.asm import R0, R1, R2, R3, R4, R10, Asm, reg  # noqa: E402
from ebpf_energy.loader.maps import Map  # noqa: E402
from ebpf_energy.loader.ringbuf import BUSY, DISCARD, HDR, LEN_MASK, RingBuffer  # noqa: E402

PATTERN = 0x0123456789ABCDEF
PER_RUN = 64
REC = struct.Struct("<QQ")


def producer(rb_fd):
    a = Asm()
    a.call(uapi.FN_ktime_get_ns)
    a.stx(8, R10, -16, R0)
    a.ld_imm64(R1, PATTERN)
    a.stx(8, R10, -8, R1)
    for _ in range(PER_RUN):
        a.ld_map_fd(R1, rb_fd)
        a.mov(R2, reg(R10))
        a.add(R2, -16)
        a.mov(R3, 16)
        a.mov(R4, 0)
        a.call(uapi.FN_ringbuf_output)
    a.mov(R0, 0)
    a.exit()
    fd, _ = syscall.prog_load(uapi.BPF_PROG_TYPE_SOCKET_FILTER, a.assemble(), "GPL", name="rb_bench")
    return fd


def raw_walk(rb):
    """The reference: read each header, step over the record, touch nothing else."""
    cons_v, prod_v, hdr, mask = rb._cons, rb._prod, rb._hdr, rb._mask
    cons = cons_v[0]
    prod = prod_v[0]
    n = 0
    while cons < prod:
        h = hdr[(cons & mask) >> 2]
        if h & BUSY:
            break
        if not h & DISCARD:
            n += 1
        cons += ((h & LEN_MASK) + HDR + 7) & ~7
    cons_v[0] = cons
    return n


def drain_cb(rb):
    out = []
    add = out.append
    unpack = REC.unpack
    rb.consume(lambda v: add(unpack(v)))
    return len(out), out


def drain_batch(rb):
    recs = rb.consume_batch()
    return len(recs), recs


def drain_batch_decode(rb):
    unpack = REC.unpack
    out = [unpack(r) for r in rb.consume_batch()]
    return len(out), out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ring-mb", type=int, default=16, help="ring size in MiB (power of two)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the streaming run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("ringbuf_drain: needs root (bpf())", file=sys.stderr)
        return 2
    size = args.ring_mb << 20
    ring = Map.create("rb_bench", uapi.BPF_MAP_TYPE_RINGBUF, 0, 0, size)
    prog = producer(ring.fd)
    rb = RingBuffer(ring.fd, size)
    per_fill = (size - 1) // 24
    repeat = per_fill // PER_RUN
    results = {}
    try:
        def fill():
            syscall.prog_test_run(prog, b"\0" * 64, repeat=repeat)
            return rb.available() // 24

        methods = [("raw", lambda r: (raw_walk(r), None)), ("consume+cb", drain_cb), ("batch", drain_batch),
                   ("batch+decode", drain_batch_decode)]
        rates = {name: [] for name, _ in methods}
        for _ in range(args.rounds):
            for name, fn in methods:  # interleaved, so drift hits all alike
                want = fill()
                t0 = time.perf_counter()
                n, recs = fn(rb)
                dt = time.perf_counter() - t0
                if n != want:
                    raise SystemExit(f"{name}: drained {n} records, {want} were written")
                if name in ("consume+cb", "batch+decode") and recs[-1][1] != PATTERN:
                    raise SystemExit(f"{name}: record payload corrupted: {recs[-1]}")
                rates[name].append(n / dt)
        raw = statistics.median(rates["raw"])
        for name, _ in methods:
            med = statistics.median(rates[name])
            results[name] = {"events_per_s": round(med), "ratio_to_raw": round(med / raw, 3)}
        results["records_per_fill"] = want

        # streaming: producer thread vs. epoll consumer decoding every record
        stop = threading.Event()

        def produce():
            while not stop.is_set():
                syscall.prog_test_run(prog, b"\0" * 64, repeat=256)

        got = 0
        unpack = REC.unpack
        th = threading.Thread(target=produce, daemon=True)
        th.start()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            recs = rb.consume_batch()
            if recs:
                got += len([unpack(r) for r in recs])
            else:
                rb.wait(100)
        dt = time.perf_counter() - t0
        stop.set()
        th.join()
        got += len(rb.consume_batch())
        results["streaming"] = {"events_per_s": round(got / dt), "seconds": round(dt, 2)}
    finally:
        rb.close()
        os.close(prog)
        ring.close()

    if args.json:
        print(json.dumps({"schema": 1, "ring_bytes": size, **results}, indent=2))
    else:
        print(f"ring {args.ring_mb} MiB, {results['records_per_fill']} records of 16 B per fill, "
              f"median of {args.rounds} rounds")
        for name in ("raw", "consume+cb", "batch", "batch+decode"):
            r = results[name]
            print(f"  {name:14s} {r['events_per_s'] / 1e6:6.2f} M events/s   {r['ratio_to_raw']:.2f}x raw")
        s = results["streaming"]
        print(f"  streaming (producer thread + epoll consumer, decode): {s['events_per_s'] / 1e6:.2f} M events/s")
        target = results["batch+decode"]["events_per_s"]
        print(f"target >= 500k events/s parsed: {'met' if target >= 500_000 else 'MISSED'} ({target / 1e3:.0f}k)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
