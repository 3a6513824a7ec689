"""Energy of one command or one block of Python code, whole process tree included.

The tree is followed with a temporary cgroup (children inherit it, so every
descendant is counted, however short-lived) and measured with the eBPF
sampler; the power model active for the machine turns CPU time into joules.
Without root there is no eBPF: the fallback is the rusage the kernel keeps
for us and our reaped children, which is exact for CPU time but cannot count
processes (``processes`` is then None and ``method`` says ``rusage``).

    with ebpf_energy.measure() as m:
        work()
    print(m.joules, m.cpu_seconds, m.processes)
"""

import functools
import inspect
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from ebpf_energy.report import drop_warning
from ebpf_energy.usage import ProcessUsage, UsageWindow

DEFAULT_CARBON_INTENSITY = 475.0  # gCO2e per kWh: world average grid intensity (IEA, 2019)


def carbon_grams(joules: float, g_per_kwh: float) -> float:
    return joules / 3.6e6 * g_per_kwh


@dataclass
class Result:
    """What one measured run cost."""

    wall_s: float
    cpu_ns: int
    energy_j: float
    carbon_g: float
    processes: Optional[int]
    model: dict
    method: str  # "ebpf" (cgroup + sched_switch) or "rusage"
    rusage_cpu_ns: int = 0  # what the kernel's rusage says, for cross-checking
    command: Optional[List[str]] = None
    exit_code: Optional[int] = None
    pids: List[int] = field(default_factory=list)
    # the monitor's window (CLOCK_MONOTONIC, from attach) and what it lost to a
    # full task map (eBPF only; never silent: also said on stderr)
    window: Optional[dict] = None
    dropped_slices: int = 0
    dropped_cpu_ns: int = 0
    signal: Optional[str] = None  # the signal that killed the command ("SIGTERM"); exit_code is then 128 + it
    left_running: Optional[int] = None  # processes of the tree still running when the report was made
    # the tree's CPU time and joules per core class (eBPF only): [{"class", "cpus", "cpu_ns", "energy_j", ...}]
    classes: Optional[List[dict]] = None
    by: Optional[str] = None  # run --by container|pod|service: the tree's rows under "<by>s"
    groups: Optional[List[dict]] = None

    @property
    def joules(self):
        return self.energy_j

    @property
    def cpu_seconds(self):
        return self.cpu_ns / 1e9

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("pids")
        by, groups = d.pop("by"), d.pop("groups")
        if by:
            d[by + "s"] = groups
        return d


def _default_model():
    from ebpf_energy.model.select import choose_model

    return choose_model(warn=lambda msg: None)


def _rusage_ns(who) -> int:
    r = resource.getrusage(who)
    return int(round((r.ru_utime + r.ru_stime) * 1e9))


def can_follow_tree() -> bool:
    """eBPF needs CAP_BPF and CAP_PERFMON (or root); following a tree needs a
    cgroup of ours to make one in (root, or a delegated cgroup: a systemd
    unit with Delegate=yes, or ``systemd-run --user --scope -p Delegate=yes``)."""
    from ebpf_energy.cgroups import cgroup2_mount, own_cgroup
    from ebpf_energy.privilege import can_bpf

    mount = cgroup2_mount()
    return bool(can_bpf() and mount and os.access(mount.rstrip("/") + own_cgroup(), os.W_OK))


class _Tree:
    """Sampler + cgroup + meter around one measured stretch (root only)."""

    def __init__(self, model, meter, sampler=None):
        """``sampler``: a running EbpfSampler to share (the pytest plugin's,
        one load per session); the stretch is then the difference of two of
        its reads. Without one, a sampler is started and stopped here."""
        from ebpf_energy.cgroups import TempCgroup, own_cgroup

        self.model, self.meter = model, meter
        self.cgroup = TempCgroup("run", parent=own_cgroup())
        self.shared = sampler is not None
        if sampler is None:
            from ebpf_energy.monitor import EbpfSampler

            from ebpf_energy.topology import sampler_kwargs

            sampler = EbpfSampler(**sampler_kwargs(getattr(model, "topology", None)))
        self.sampler = sampler
        self.steps = None  # the one step from the start of the stretch to finish()
        self.window = None
        self.classes = None

    def __enter__(self):
        self.cgroup.__enter__()
        try:
            from ebpf_energy.driver import MeterGuard, WindowStepper

            w0 = None
            if self.shared:
                w0 = self.sampler.read()
            else:
                self.sampler.start()
            guard = MeterGuard(self.meter, self.model) if self.meter is not None else None
            self.steps = WindowStepper(self.sampler, self.model, guard, prev=w0,
                                       m_prev=guard.read() if guard is not None else None)
            self.model.begin(self.meter)
        except BaseException:
            if not self.shared:
                self.sampler.stop()
            self.cgroup.remove()
            raise
        return self

    def finish(self, exclude_pid=0, extra_cpu_ns=0):
        """Read the whole machine's window; return (cpu_ns, joules, pids, model) of the tree.

        ``extra_cpu_ns`` is CPU time of the tree measured another way (the
        calling process itself, see Measurement); it is priced like the rest:
        at the tree's average joules per CPU-ns, or by the model alone when the
        tree has no other CPU time.
        """
        st = self.steps.step()
        window, attribution = st.window, st.attribution
        self.window = window
        note = drop_warning(window, fix="the monitor's task map filled faster than it was emptied")
        if note:
            sys.stderr.write(f"ebpf-energy: {note}\n")
        mine = [(k, p) for k, p in window.processes.items()
                if self.cgroup.contains(p.cgroup) and p.pid != exclude_pid]
        self.rows = [{"cgroup": p.cgroup, "cpu_ns": p.cpu_ns, "slices": p.slices,
                      "energy_j": attribution.energy_j.get(k, 0.0)} for k, p in mine]
        cpu_ns = sum(p.cpu_ns for _, p in mine)
        joules = math.fsum(r["energy_j"] for r in self.rows)
        if extra_cpu_ns:
            total_cpu = window.total_cpu_ns or 1
            dynamic = sum(attribution.energy_j.values())
            joules += dynamic * extra_cpu_ns / total_cpu
            cpu_ns += extra_cpu_ns
        from ebpf_energy.class_report import tree_class_rows

        self.classes = tree_class_rows(dict(mine), attribution.model, attribution.energy_j, window.source)
        return cpu_ns, joules, sorted(p.pid for _, p in mine), attribution.model

    def wait_empty(self, poll_s: float = 0.05) -> None:
        """Until no process is left in the run's cgroup (``run --wait``)."""
        while self.cgroup.pids(subtree=True):
            time.sleep(poll_s)

    def window_facts(self) -> dict:
        """The Result fields that describe the monitor's window and its losses."""
        w = self.window
        return {"window": {"start_ns": w.start_ns, "end_ns": w.end_ns}, "dropped_slices": w.drops.get("tasks", 0),
                "dropped_cpu_ns": w.dropped_cpu_ns, "classes": self.classes}

    def close(self, keep_alive_to: Optional[str] = None):
        self.model.end()
        if not self.shared:
            self.sampler.stop()
        if self.cgroup.nested and keep_alive_to is not None:
            return  # the enclosing measurement removes it, after counting what ran in it
        if keep_alive_to is not None:
            from ebpf_energy.cgroups import move_to

            for _ in range(20):  # processes that outlive the block keep running (a fork may race a move)
                pids = self.cgroup.pids(subtree=True)
                if not pids:
                    break
                for pid in pids:
                    try:
                        move_to(keep_alive_to, pid)
                    except OSError:
                        pass
        self.cgroup.remove()


def _modelled_alone(model, cpu_ns: int, wall_ns: int):
    """Joules for a lone CPU-time figure (the rusage fallback): the model sees one process."""
    window = UsageWindow(source="rusage", start_ns=0, end_ns=wall_ns, ncpus=os.cpu_count() or 1,
                         processes={1: ProcessUsage(pid=1, comm="", cpu_ns=cpu_ns)})
    a = model.attribute(window, None)
    return a.energy_j.get(1, 0.0), a.model


def run_command(argv: List[str], model=None, meter=None, carbon_intensity=DEFAULT_CARBON_INTENSITY,
                forward_signals=True, wait_for_tree=False, by: Optional[str] = None) -> Result:
    """Run ``argv`` to completion and measure its whole tree.

    Like ``time`` and ``perf stat``, processes the command leaves running (a
    daemon, a ``(...) &``) keep running: they are counted up to the report
    and said in ``left_running``. ``wait_for_tree`` waits until the whole
    tree has ended instead, and counts it whole (root only: it needs the
    run's cgroup). ``by`` (container, pod, service) also breaks the tree's
    figures down by what owns each process's cgroup (eBPF only: rusage
    cannot tell processes apart)."""
    from ebpf_energy.cgroups import own_cgroup

    if model is None:
        model, meter = _default_model()
    tree = _Tree(model, meter) if can_follow_tree() else None
    if tree is not None:
        tree.__enter__()
    from ebpf_energy.forwarding import ForwardingWait

    # like time(1), we stay to report: a terminal's Ctrl-C reaches the command
    # itself, and a SIGINT or SIGTERM sent to us is passed on to it
    waiter = ForwardingWait(lambda: tree.cgroup.pids(subtree=True) if tree is not None else ())
    try:
        t0 = time.monotonic_ns()
        origin = own_cgroup()
        if forward_signals:
            waiter.__enter__()
        try:
            proc = subprocess.Popen(argv, preexec_fn=tree.cgroup.join if tree else None)
        except OSError as e:
            raise _cannot_run(argv[0], e) from None
        status, ru = waiter.wait(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        left = None
        if tree is not None:
            if wait_for_tree:
                tree.wait_empty()
            left = len(tree.cgroup.pids(subtree=True))
        wall_ns = time.monotonic_ns() - t0
        rusage_ns = int(round((ru.ru_utime + ru.ru_stime) * 1e9))
        groups = None
        if tree is not None:
            cpu_ns, joules, pids, model_desc = tree.finish()
            method, processes = "ebpf", len(pids)
            if by:
                from ebpf_energy.report import group_by_owner

                groups = group_by_owner(tree.rows, by)
        else:
            cpu_ns, pids, processes, method = rusage_ns, [proc.pid], None, "rusage"
            joules, model_desc = _modelled_alone(model, cpu_ns, wall_ns)
    finally:
        waiter.__exit__(None, None, None)
        if tree is not None:
            tree.close(keep_alive_to=origin)  # survivors keep running, where we run
    code, sig = proc.returncode, None
    if code < 0:
        sig, code = signal.Signals(-code).name, 128 - code
    return Result(wall_s=wall_ns / 1e9, cpu_ns=cpu_ns, energy_j=joules,
                  carbon_g=carbon_grams(joules, carbon_intensity), processes=processes, model=model_desc,
                  method=method, rusage_cpu_ns=rusage_ns, command=list(argv), exit_code=code, pids=pids,
                  signal=sig, left_running=left, by=by, groups=groups,
                  **(tree.window_facts() if tree is not None else {}))


def _cannot_run(name: str, e: OSError) -> "RunError":
    """Why ``name`` could not be started, as a shell says it: 127 not found,
    126 found but not runnable. exec's errno alone misleads: a directory is
    "Permission denied", a script whose #! interpreter is missing "No such file"."""
    if isinstance(e, FileNotFoundError):
        if "/" not in name:
            return RunError(f"cannot run {name}: command not found (not in PATH)", 127)
        if os.path.isfile(name):
            return RunError(f"cannot run {name}: its #! interpreter was not found", 127)
        return RunError(f"cannot run {name}: No such file or directory", 127)
    if "/" in name and os.path.isdir(name):
        return RunError(f"cannot run {name}: it is a directory", 126)
    return RunError(f"cannot run {name}: {e.strerror}", 126)


class RunError(Exception):
    """The command could not be started; ``exit_code`` is what a shell would return (126, 127)."""

    def __init__(self, message, exit_code=127):
        super().__init__(message)
        self.exit_code = exit_code


class Measurement:
    """``with measure():`` or ``@measure()``: energy of a block of this process and its children."""

    def __init__(self, model=None, meter=None, carbon_intensity=DEFAULT_CARBON_INTENSITY, use_ebpf=None,
                 sampler=None):
        self._model, self._meter = model, meter
        self._sampler = sampler  # a running EbpfSampler to share instead of loading one per block
        self.carbon_intensity = carbon_intensity
        self.use_ebpf = can_follow_tree() if use_ebpf is None else use_ebpf
        self.result: Optional[Result] = None
        self._tree = None
        self._active = False  # inside the block: entering again would orphan the running tree
        self.history: List[Result] = []

    # -- results ------------------------------------------------------------------
    def _need(self):
        if self.result is None:
            raise RuntimeError("the measurement has not finished: read it after the with block")
        return self.result

    joules = property(lambda self: self._need().energy_j)
    cpu_seconds = property(lambda self: self._need().cpu_ns / 1e9)
    processes = property(lambda self: self._need().processes)
    wall_seconds = property(lambda self: self._need().wall_s)
    carbon_grams = property(lambda self: self._need().carbon_g)

    # -- context manager ----------------------------------------------------------
    def __enter__(self):
        from ebpf_energy.cgroups import own_cgroup

        if self._active:
            raise RuntimeError("this measurement is already running: a Measurement measures one block at a time "
                               "(use a new measure() for a nested block)")
        if self._model is None:
            self._model, self._meter = _default_model()
        self._origin = None
        if self.use_ebpf:
            _claim_process_for(self)
            try:
                # nested in another block: share its running sampler, so the
                # outer block is not charged for loading a second monitor
                self._tree = _Tree(self._model, self._meter, self._sampler or _enclosing_sampler()).__enter__()
            except BaseException:
                _release_process(self)
                raise
            _holder["trees"].append(self._tree)
            self._origin = own_cgroup()
            self._tree.cgroup.add(os.getpid())
        self._self0 = _rusage_ns(resource.RUSAGE_SELF)
        self._r0 = self._self0 + _rusage_ns(resource.RUSAGE_CHILDREN)
        self._t0 = time.monotonic_ns()
        self._active = True
        return self

    def __exit__(self, *exc):
        from ebpf_energy.cgroups import move_to

        self._active = False
        wall_ns = time.monotonic_ns() - self._t0
        rusage_ns = _rusage_ns(resource.RUSAGE_SELF) + _rusage_ns(resource.RUSAGE_CHILDREN) - self._r0
        facts = {}
        if self._tree is not None:
            # This process moved into the cgroup while running, which the
            # kernel side only notices at its next refresh: count our own
            # part from RUSAGE_SELF (exact) and the children from the cgroup.
            self_ns = _rusage_ns(resource.RUSAGE_SELF) - self._self0
            try:
                move_to(self._origin)
                cpu_ns, joules, pids, desc = self._tree.finish(exclude_pid=os.getpid(), extra_cpu_ns=self_ns)
                facts = self._tree.window_facts()
            finally:
                _holder["trees"].remove(self._tree)
                self._tree.close(keep_alive_to=self._origin)
                self._tree = None
                _release_process(self)
            processes, method = len(pids) + 1, "ebpf"
        else:
            cpu_ns, pids, processes, method = rusage_ns, [], None, "rusage"
            joules, desc = _modelled_alone(self._model, cpu_ns, wall_ns)
        self.result = Result(wall_s=wall_ns / 1e9, cpu_ns=cpu_ns, energy_j=joules,
                             carbon_g=carbon_grams(joules, self.carbon_intensity), processes=processes,
                             model=desc, method=method, rusage_cpu_ns=rusage_ns, pids=pids, **facts)
        self.history.append(self.result)
        return False

    # -- decorator ----------------------------------------------------------------
    def __call__(self, fn):
        if inspect.iscoroutinefunction(fn):
            # measure the awaited call, not the coroutine's creation; what
            # else the event loop runs while it awaits is in this process
            # too, and so in the measurement
            @functools.wraps(fn)
            async def awaiting(*args, **kwargs):
                if self._active:
                    return await fn(*args, **kwargs)
                with self:
                    return await fn(*args, **kwargs)

            awaiting.measurement = self
            return awaiting

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if self._active:  # a recursive call (or another thread's): part of the call being measured
                return fn(*args, **kwargs)
            with self:
                return fn(*args, **kwargs)

        wrapper.measurement = self
        return wrapper


# The eBPF side follows this process by moving it into the block's cgroup:
# that is the whole process, every thread, so two threads cannot each have a
# block at once (one block's children would land in the other's cgroup).
# Nested blocks in one thread are fine: each nests its cgroup in the outer.
_holder_lock = threading.Lock()
_holder = {"thread": None, "depth": 0, "trees": []}  # trees: the open blocks' _Trees, outermost first


def _enclosing_sampler():
    """The running sampler of the innermost open block of this process, or None."""
    with _holder_lock:
        return _holder["trees"][-1].sampler if _holder["trees"] else None


def _claim_process_for(m):
    me = threading.get_ident()
    with _holder_lock:
        if _holder["thread"] not in (None, me):
            raise RuntimeError("measure(): another thread of this process is inside a measured block; the kernel "
                               "follows processes, not threads, so blocks in two threads at once cannot be told "
                               "apart. Measure them one after the other, or in separate processes")
        _holder["thread"] = me
        _holder["depth"] += 1


def _release_process(m):
    with _holder_lock:
        _holder["depth"] -= 1
        if _holder["depth"] <= 0:
            _holder.update(thread=None, depth=0)


def measure(**kwargs) -> Measurement:
    """Measure a block (``with measure() as m``) or every call of a function (``@measure()``)."""
    return Measurement(**kwargs)
