"""Shared test fixtures and the CI rule: under CI=true a skip is a failure.

Only the hardware markers this machine cannot satisfy (``requires_rapl``,
``requires_power_pmu``, ``requires_fentry``) may skip in CI; anything else that
skips would let the suite pass without testing, so it fails instead.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_BPF_BUILD = ROOT / "tests" / "bpf" / "build"
HARDWARE_MARKERS = {"requires_rapl", "requires_power_pmu", "requires_fentry"}


def is_root():
    return os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    if is_root():
        return
    skip = pytest.mark.skip(reason="needs root for bpf()")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped:
        return
    if hasattr(report, "wasxfail"):  # an expected failure is reported as skipped: not a skip
        return
    if HARDWARE_MARKERS & set(item.keywords):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, which is a failure here: {reason}"


def _make(target):
    subprocess.run(["make", "-s", "-C", str(ROOT), target], check=True)


@pytest.fixture(scope="session")
def test_objects():
    """Build tests/bpf/*.bpf.c (a no-op when up to date) and return a path getter."""
    _make("test-objects")

    def path(name):
        p = TEST_BPF_BUILD / f"{name}.bpf.o"
        assert p.exists(), f"{p} was not built: is tests/bpf/{name}.bpf.c missing?"
        return p

    return path


@pytest.fixture(scope="session")
def monitor_object():
    _make("objects")
    return ROOT / "ebpf_energy" / "bpf" / "energy_monitor.bpf.o"


# -- nothing left behind by the whole session ------------------------------------
# Individual tests check their own objects; this checks the sum at the end of
# the session, so a leak no single test looks for still fails the run: BPF
# programs, maps and links, our cgroups, files pinned in bpffs, and processes
# of ours still running.
#
# "Ours" is exact even while other work runs on the machine (another test
# session, a monitor someone started): every process this session starts
# inherits SESSION_TOKEN in its environment, and a BPF object that a process
# without the token holds open belongs to that process, not to a leak of ours.

SESSION_VAR = "EBPF_ENERGY_TEST_SESSION"
SESSION_TOKEN = os.environ.setdefault(SESSION_VAR, f"{os.getpid()}-{os.urandom(4).hex()}")
_TOKEN_BYTES = f"{SESSION_VAR}={SESSION_TOKEN}".encode()


def _bpf_ids():
    from ebpf_energy.loader import syscall

    out = set()
    for kind, nxt in (("prog", syscall.prog_get_next_id), ("map", syscall.map_get_next_id),
                      ("link", syscall.link_get_next_id)):
        i = 0
        while True:
            i = nxt(i)
            if i is None:
                break
            out.add((kind, i))
    return out


def _is_ours(pid):
    """Whether process ``pid`` was started by this session (it carries the token)."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return _TOKEN_BYTES in f.read().split(b"\0")
    except OSError:
        return False


_FDINFO_KEYS = {b"prog_id": "prog", b"map_id": "map", b"link_id": "link"}


def _foreign_bpf_ids():
    """BPF objects held open by processes that are not this session's."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit() or _is_ours(int(d)):
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{d}/fdinfo/{fd}", "rb") as f:
                    info = f.read()
            except OSError:
                continue
            for line in info.splitlines():
                key, _, value = line.partition(b":")
                kind = _FDINFO_KEYS.get(key)
                if kind and value.strip().isdigit():
                    out.add((kind, int(value)))
    return _with_what_they_use(out)


def _with_what_they_use(held):
    """A held link keeps its program, a held program its maps: theirs too."""
    from ebpf_energy.loader import syscall
    from ebpf_energy.loader.errors import LoaderError

    def info(kind, obj_id):
        try:
            fd = getattr(syscall, f"{kind}_get_fd_by_id")(obj_id)
        except (LoaderError, OSError):
            return None  # gone meanwhile
        try:
            return syscall.obj_get_info(fd, kind)
        except (LoaderError, OSError):
            return None
        finally:
            syscall.close(fd)

    out = set(held)
    progs = {i for k, i in held if k == "prog"}
    for k, i in held:
        if k == "link":
            d = info("link", i)
            if d and d.get("prog_id"):
                progs.add(d["prog_id"])
    for i in progs:
        out.add(("prog", i))
        d = info("prog", i)
        out.update(("map", m) for m in (d or {}).get("map_ids", ()))
    return out


def _our_cgroups():
    found = set()
    for top in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for dirpath, dirnames, _ in os.walk(top):
            if dirpath.count("/") > top.count("/") + 3:
                dirnames[:] = []
                continue
            found.update(os.path.join(dirpath, d) for d in dirnames if d.startswith("ebpf-energy")
                         and not any(_made_by_another_live_process(part)
                                     for part in os.path.join(dirpath, d).split("/")))
    return found


def _made_by_another_live_process(name):
    """``ebpf-energy-<what>-<pid>-<n>`` made by a live process that is not ours."""
    parts = name.split("-")
    pid = next((int(p) for p in parts[2:] if p.isdigit()), None)
    return pid is not None and os.path.exists(f"/proc/{pid}") and not _is_ours(pid)


# The kernel's bpf_preload puts these two iterators into every bpffs it mounts:
# a test that mounts /sys/fs/bpf on a fresh machine makes them, not a leak.
KERNEL_PINS = {"maps.debug", "progs.debug"}


def _pins():
    try:
        return set(os.listdir("/sys/fs/bpf")) - KERNEL_PINS
    except OSError:
        return set()


def _our_processes():
    me, out = os.getpid(), set()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me or not _is_ours(int(d)):
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and cmd:
            out.add((int(d), cmd.replace(b"\0", b" ").decode(errors="replace")[:100]))
    return out


def _snapshot():
    bpf = _bpf_ids() - _foreign_bpf_ids() if is_root() else set()
    return {"bpf objects": bpf, "cgroups": _our_cgroups(), "pins": _pins(), "processes": _our_processes()}


def pytest_sessionstart(session):
    from ebpf_energy.loader import fd

    fd.track()  # every loader Fd notes what it refers to, so an unclosed one is found at the end
    session.config._leak_baseline = _snapshot()


def _leaked_descriptors():
    """Loader descriptors (ebpf_energy.loader.fd.Fd) this process made and never closed."""
    from ebpf_energy.loader import fd

    return [f"fd {n} from {origin}" for n, origin in fd.leaks()]


def pytest_sessionfinish(session, exitstatus):
    import time

    base = getattr(session.config, "_leak_baseline", None)
    if base is None:
        return
    deadline = time.monotonic() + 10  # the kernel frees closed objects a moment later (RCU)
    while True:
        now = _snapshot()
        left = {k: sorted(now[k] - base[k]) for k in now if now[k] - base[k]}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    fds = _leaked_descriptors()
    if fds:
        left["descriptors"] = fds
    if left:
        lines = [f"  {k}: {v[:10]}" + (f" (+{len(v) - 10} more)" if len(v) > 10 else "") for k, v in left.items()]
        session.config._leaks = lines
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = getattr(config, "_leaks", None)
    if lines:
        terminalreporter.section("left behind by the test session (a leak: find the test that made it)")
        for ln in lines:
            terminalreporter.line(ln)
