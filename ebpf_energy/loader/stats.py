"""Programs' run-time statistics (``run_time_ns``, ``run_cnt``) for a ``with`` block.

The kernel counts them only while some process holds a BPF_ENABLE_STATS fd
(counting costs a clock read per run), so the fd is the switch: open for the
block, closed after it, whatever happens inside.
"""

from contextlib import contextmanager

from . import syscall
from .errors import LoaderError


@contextmanager
def run_time_stats(required=True):
    """Count inside the block; yields True. With ``required=False`` a kernel
    that refuses (BPF_ENABLE_STATS needs CAP_SYS_ADMIN) yields False instead of raising."""
    try:
        fd = syscall.enable_stats()
    except LoaderError:
        if required:
            raise
        yield False
        return
    with fd:
        yield True
