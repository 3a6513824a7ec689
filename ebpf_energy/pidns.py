"""A process's PID inside its own PID namespace (a container's ``1``).

Reports key processes by their PID on the host (the namespace the monitor's
``/proc`` belongs to); a process in a container also has the PID its own
namespace gives it, the last field of ``NSpid:`` in ``/proc/PID/status``.
Seen from inside a container, a host report seemed to miss its processes:
they were there under other numbers. Read once per process (cached by pid and
cgroup id, so a reused pid in another cgroup is read again).
"""

from typing import Dict, Optional, Tuple


def parse_nspid(status: bytes) -> Optional[int]:
    """The innermost PID from a status file's ``NSpid:`` line; None when the
    process is in the reader's own PID namespace (one field) or it is absent."""
    for line in status.split(b"\n"):
        if line.startswith(b"NSpid:"):
            fields = line.split()[1:]
            return int(fields[-1]) if len(fields) > 1 else None
    return None


def read_nspid(pid: int, proc_root: str = "/proc") -> Optional[int]:
    try:
        with open(f"{proc_root}/{pid}/status", "rb") as f:
            return parse_nspid(f.read())
    except (OSError, ValueError):
        return None


class NsPids:
    """``nspid`` for the processes of a window, each read once while it lives."""

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = proc_root
        self._known: Dict[Tuple[int, Optional[int]], Optional[int]] = {}

    def fill(self, processes) -> None:
        """Set ``nspid`` on every ProcessUsage (an exited one keeps what was read while it lived)."""
        known = self._known
        for pid, p in processes.items():
            key = (pid, p.cgroup_id)
            if key not in known:
                if p.exited:
                    continue
                known[key] = read_nspid(pid, self.proc_root)
            p.nspid = known[key]
        if len(known) > 2 * len(processes) + 64:  # forget the processes the window no longer holds
            live = {(pid, p.cgroup_id) for pid, p in processes.items()}
            self._known = {k: v for k, v in known.items() if k in live}
