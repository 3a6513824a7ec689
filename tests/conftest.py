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


def _our_cgroups():
    found = set()
    for top in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for dirpath, dirnames, _ in os.walk(top):
            if dirpath.count("/") > top.count("/") + 3:
                dirnames[:] = []
                continue
            found.update(os.path.join(dirpath, d) for d in dirnames if d.startswith("ebpf-energy"))
    return found


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
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and (b"ebpf_energy" in cmd or b"ebpf-energy" in cmd):
            out.add((int(d), cmd.replace(b"\0", b" ").decode(errors="replace")[:100]))
    return out


def _snapshot():
    return {"bpf objects": _bpf_ids() if is_root() else set(), "cgroups": _our_cgroups(), "pins": _pins(),
            "processes": _our_processes()}


def pytest_sessionstart(session):
    session.config._leak_baseline = _snapshot()


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
