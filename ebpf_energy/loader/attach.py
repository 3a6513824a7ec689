"""The attach kinds moved to :mod:`ebpf_energy.loader.link` (one module per
kind); these names stay for the callers written against this module."""

from .link.base import Link  # noqa: F401
from .link.raw_tracepoint import attach_raw_tracepoint  # noqa: F401
from .link.tracepoint import TRACEFS_CANDIDATES, attach_tracepoint, tracefs_root, tracepoint_id  # noqa: F401
from .link.tracing import attach_tracing  # noqa: F401
