"""The teaching trace: every syscall, relocation and verifier line, as text.

Modules call :func:`trace` unconditionally; it costs one attribute check when
no one listens. ``ebpf-energy load --explain`` (and ``monitor --explain``)
turn it on with :func:`enable`, writing to stderr by default.
"""

import sys

_sink = None


def enable(stream=None):
    """Send the trace to ``stream`` (stderr by default)."""
    global _sink
    _sink = stream if stream is not None else sys.stderr


def disable():
    global _sink
    _sink = None


def enabled():
    return _sink is not None


def trace(step, message, *detail_lines):
    """Write one step: ``[step] message`` then indented detail lines.

    ``step`` is a short category a reader can scan for: ``elf``, ``btf``,
    ``map``, ``reloc``, ``core``, ``prog``, ``verifier``, ``attach``,
    ``syscall``, ``close``.
    """
    if _sink is None:
        return
    out = [f"[{step:8}] {message}"]
    out.extend(f"{'':11}{line}" for line in detail_lines)
    _sink.write("\n".join(out) + "\n")
    _sink.flush()
