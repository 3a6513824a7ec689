"""A throw-away cgroup v2 directory: how we know every process of a command.

Children inherit their parent's cgroup, so a command started inside one
keeps all of its descendants there, however short-lived, and the eBPF
monitor reports each task's cgroup. ``compare``, ``run`` and
``ebpf_energy.measure()`` use this; the directory is removed afterwards.
"""

import itertools
import os
import re
import signal
import time
from typing import List, Optional

_counter = itertools.count()


class CgroupError(Exception):
    """No cgroup v2, or no permission to make one."""


def cgroup2_mount() -> Optional[str]:
    """Where cgroup v2 is mounted (``/sys/fs/cgroup`` or ``/sys/fs/cgroup/unified``)."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


def own_cgroup() -> str:
    """This process's cgroup v2 path (the ``0::`` line of /proc/self/cgroup)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    return "/"


_STALE = re.compile(r"^ebpf-energy-(?P<purpose>[a-z]+)-(?P<pid>[0-9]+)-[0-9]+$")


def sweep_stale(directory: str) -> List[str]:
    """Remove our temporary cgroups in ``directory`` whose owner died without
    removing them (SIGKILL): a ``compare`` workload's leftovers are ours and
    are killed; anything else (a ``run`` command that outlived a killed
    ``run``) is the user's, so such a cgroup goes only once it is empty.
    Returns the paths removed."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _STALE.match(name)
        if not m or _alive(int(m.group("pid"))):
            continue
        cg = TempCgroup.__new__(TempCgroup)
        cg.path = os.path.join(directory, name)
        if m.group("purpose") == "compare":
            cg.kill_all()
            cg.remove(timeout_s=1.0)
        else:
            try:
                os.rmdir(cg.path)
            except OSError:
                continue
        if not os.path.exists(cg.path):
            removed.append(cg.path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TempCgroup:
    """``with TempCgroup("run") as cg:`` makes ``<mount>[<parent>]/ebpf-energy-run-<pid>-<n>``.

    Made under ``parent`` (the caller's own cgroup, for nested measurements),
    a measurement inside another stays inside the outer one's cgroup, so the
    outer one still counts those processes."""

    def __init__(self, purpose: str, mount: Optional[str] = None, parent: str = "/"):
        self.mount = (mount or cgroup2_mount() or "").rstrip("/")
        if not self.mount:
            raise CgroupError("no cgroup v2 mount: needed to follow a command's processes")
        self.rel = f"{parent.rstrip('/')}/ebpf-energy-{purpose}-{os.getpid()}-{next(_counter)}"
        self.path = self.mount + self.rel
        self.id = 0

    def __enter__(self):
        sweep_stale(self.mount + (os.path.dirname(self.rel) if os.path.dirname(self.rel) != "/" else ""))
        try:
            os.mkdir(self.path)
        except PermissionError:
            raise CgroupError(f"cannot create {self.path}: needs root") from None
        except OSError as e:
            raise CgroupError(f"cannot create {self.path}: {e.strerror}") from None
        self.id = os.stat(self.path).st_ino
        return self

    def __exit__(self, *exc):
        self.remove()

    def add(self, pid: int = 0):
        """Move ``pid`` (0: the calling process, all its threads) into the cgroup."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(pid or os.getpid()))

    def join(self):
        """``preexec_fn`` for subprocess: the child moves itself in before it execs."""
        self.add(0)

    def contains(self, cgroup_path: Optional[str]) -> bool:
        return bool(cgroup_path) and (cgroup_path == self.rel or cgroup_path.startswith(self.rel + "/"))

    def pids(self, subtree: bool = False) -> List[int]:
        """Processes in the cgroup (and, with ``subtree``, in the cgroups below it)."""
        dirs = [d for d, _, _ in os.walk(self.path)] if subtree else [self.path]
        out = []
        for d in dirs:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
        return out

    def cpu_usage_ns(self) -> Optional[int]:
        """CPU time of every process that ever ran in the cgroup (and below it),
        from ``cpu.stat``'s ``usage_usec``: the scheduler's own clock, kept after
        the processes exit, whether or not anything reaped them. None where the
        kernel has no such file."""
        try:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) * 1000
        except (OSError, ValueError):
            pass
        return None

    def wait_empty(self, timeout_s: float = 5.0) -> bool:
        """Wait until no process is left in the cgroup (killed ones take a moment to go)."""
        end = time.monotonic() + timeout_s
        while self.pids(subtree=True):
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def kill_all(self):
        for pid in self.pids(subtree=True):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @property
    def nested(self) -> bool:
        """Inside another of ours: that one removes this one (and still sees its ids until then)."""
        return "/ebpf-energy-" in self.rel.rsplit("/", 1)[0]

    def remove(self, timeout_s: float = 5.0):
        """Remove the directory and any left inside it, deepest first; leftover
        processes are killed first (rmdir needs it empty)."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                for dirpath, _, _ in sorted(os.walk(self.path), key=lambda t: -t[0].count("/")):
                    if dirpath != self.path:
                        os.rmdir(dirpath)
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > end:
                    return
                self.kill_all()
                time.sleep(0.02)


def move_to(path_rel: str, pid: int = 0, mount: Optional[str] = None):
    """Move a process back to the cgroup it came from."""
    mount = (mount or cgroup2_mount() or "").rstrip("/")
    with open(os.path.join(mount + path_rel, "cgroup.procs"), "w") as f:
        f.write(str(pid or os.getpid()))
