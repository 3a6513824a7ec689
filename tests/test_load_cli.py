"""``ebpf-energy load`` as a real process: JSON shape (the README's "load"
section), exit codes, --program, --set, --max-entries, --no-attach, --stats
and the --explain teaching trace.

Long runs use ``--duration 30`` and are stopped with SIGINT once this test has
triggered an exact number of ``getppid()`` calls; what the child holds in the
kernel is read from its /proc/PID/fdinfo (prog_id, map_id, link_id, btf_id).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ebpf_energy.loader import syscall

from test_object import NCPU, assert_gone, trigger

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-m", "ebpf_energy", "load"]
ATTACH_TIMEOUT_S = 20


def run_load(*args, timeout=60):
    return subprocess.run(CMD + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def fdinfo_ids(pid):
    """{kind: {id: fields}} of the BPF objects process ``pid`` holds fds of."""
    out = {"prog": {}, "map": {}, "link": {}, "btf": {}}
    try:
        names = os.listdir(f"/proc/{pid}/fdinfo")
    except FileNotFoundError:
        return out
    for fd in names:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        for kind in ("link", "prog", "map", "btf"):  # a link's fdinfo also names its prog_id
            if f"{kind}_id" in fields:
                out[kind][int(fields[f"{kind}_id"])] = fields
                break
    return out


class Running:
    """``load OBJ --duration 30 ARGS`` in the background, its output collected."""

    def __init__(self, obj, *args, duration=30):
        self.proc = subprocess.Popen(CMD + [str(obj), "--duration", str(duration)] + [str(a) for a in args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._out, self._err = [], []
        self._threads = [threading.Thread(target=self._drain, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream, buf):
        buf.append(stream.read())

    def wait_attached(self, links):
        """Wait until the child holds ``links`` links; returns its kernel ids."""
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline:
            ids = fdinfo_ids(self.proc.pid)
            if len(ids["link"]) >= links:
                return ids
            if self.proc.poll() is not None:
                self.finish()
                raise AssertionError(f"load exited early ({self.proc.returncode}): {self.stderr}")
            time.sleep(0.01)
        raise AssertionError(f"no {links} links after {ATTACH_TIMEOUT_S}s: {fdinfo_ids(self.proc.pid)}")

    def wait_loaded(self, progs):
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline:
            ids = fdinfo_ids(self.proc.pid)
            if len(ids["prog"]) >= progs:
                time.sleep(0.1)  # let it finish (attach or not) before reading again
                return fdinfo_ids(self.proc.pid)
            assert self.proc.poll() is None, self.finish()
            time.sleep(0.01)
        raise AssertionError("programs never loaded")

    def stop(self, sig=signal.SIGINT, timeout=20):
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout=20):
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(5)
        return self.proc.returncode

    stdout = property(lambda self: "".join(self._out))
    stderr = property(lambda self: "".join(self._err))

    def json(self):
        return json.loads(self.stdout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def by_name(items):
    return {i["name"]: i for i in items}


def as_id_sets(ids):
    return {k: set(v) for k, v in ids.items()}


# --------------------------------------------------------------------------- JSON and --set
PROGRAM_KEYS = {"name", "section", "type", "attached", "id", "run_cnt", "run_time_ns"}
MAP_KEYS = {"name", "type", "key_size", "value_size", "max_entries", "entries"}


def test_json_shape_set_and_exact_counts(test_objects):
    n = 6
    with Running(test_objects("rodata"), "--json", "--set", f"target_tgid={os.getpid()}",
                 "--set", "multiplier=5", "--set", "offset=0x1", "--set", "tag=xyz") as run:
        ids = run.wait_attached(1)
        trigger(n)
        assert run.stop() == 130, run.stderr  # cut short by SIGINT before -d was up: 128 + 2
    report = run.json()  # stdout is exactly one JSON object
    assert report["schema"] == 1
    assert report["object"].endswith("rodata.bpf.o")
    (prog,) = report["programs"]
    assert PROGRAM_KEYS <= set(prog)
    assert (prog["name"], prog["section"], prog["type"], prog["attached"]) == \
        ("use_settings", "raw_tp/sys_enter", "raw_tracepoint", True)
    assert prog["id"] in ids["prog"]
    assert isinstance(prog["run_cnt"], int) and isinstance(prog["run_time_ns"], int)
    maps = by_name(report["maps"])
    assert set(maps) == {".rodata", ".bss"}
    for m in maps.values():
        assert MAP_KEYS <= set(m)
        assert (m["type"], m["key_size"], m["max_entries"]) == ("array", 4, 1)
    assert maps[".bss"]["entries"] == [{"key": 0, "value": {
        "out_value": 7 * 5 + 1, "out_calls": n, "out_tag_len": 3, "out_tag": "xyz"}}]
    ro = maps[".rodata"]["entries"][0]["value"]
    assert (ro["target_tgid"], ro["multiplier"], ro["offset"], ro["enabled"], ro["tag"]) == \
        (os.getpid(), 5, 1, True, "xyz")
    assert_gone(as_id_sets(ids))


def test_json_maps_all_types_and_decoding(test_objects):
    n = 5
    with Running(test_objects("maps_all"), "--json", "--set", f"target_tgid={os.getpid()}") as run:
        ids = run.wait_attached(1)
        trigger(n)
        tid = threading.get_native_id()
        assert run.stop() == 130, run.stderr  # cut short by SIGINT before -d was up: 128 + 2
    maps = by_name(run.json()["maps"])
    assert {k: v["type"] for k, v in maps.items()} == {
        "hash_map": "hash", "array_map": "array", "pcpu_hash": "percpu_hash", "pcpu_array": "percpu_array",
        "lru_hash": "lru_hash", "lru_pcpu_hash": "lru_percpu_hash", "ring": "ringbuf",
        "perf_events": "perf_event_array", "task_store": "task_storage", "storage_echo": "hash",
        ".rodata": "array", ".bss": "array"}
    for name in ("ring", "perf_events", "task_store"):
        assert maps[name]["entries"] is None
    key = {"tgid": os.getpid(), "tid": tid}
    assert maps["hash_map"]["entries"] == [{"key": key, "value": {"count": n, "tag": 0x48415348, "tid": tid}}]
    assert maps["storage_echo"]["entries"] == [{"key": tid, "value": {"count": n, "tag": 0x5441534B, "tid": tid}}]
    (pcpu,) = maps["pcpu_hash"]["entries"]
    assert pcpu["key"] == key and len(pcpu["value"]) == NCPU
    assert sum(v["count"] for v in pcpu["value"]) == n
    arr = {e["key"]: e["value"] for e in maps["pcpu_array"]["entries"]}
    assert sorted(arr) == [0, 1, 2, 3] and sum(arr[1]) == n and all(len(v) == NCPU for v in arr.values())
    assert len(maps["array_map"]["entries"]) == 16
    assert maps[".bss"]["entries"][0]["value"]["calls"] == n
    assert_gone(as_id_sets(ids))


def test_stats_give_run_counts_and_text_output(test_objects):
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_before = f.read()
    r = run_load(test_objects("tp_btf_counter"), "--duration", "0.3", "--stats", "--json")
    assert r.returncode == 0, r.stderr
    (prog,) = json.loads(r.stdout)["programs"]
    assert prog["type"] == "tracing" and prog["attached"] is True
    assert prog["run_cnt"] > 0 and prog["run_time_ns"] > 0
    maps = by_name(json.loads(r.stdout)["maps"])
    assert maps[".bss"]["entries"][0]["value"]["switches"] > 0
    (cpu,) = maps["cpu_switches"]["entries"]
    assert len(cpu["value"]) == NCPU and sum(cpu["value"]) > 0
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        assert f.read() == stats_before  # BPF_ENABLE_STATS is an fd, not the sysctl

    r = run_load(test_objects("tp_btf_counter"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^count_switch\s+tp_btf/sched_switch\s+tracing\s+\d+\s+yes", r.stdout, re.M)
    assert "map cpu_switches (percpu_array, key 4 B, value 8 B, max_entries 1)" in r.stdout
    assert "map .bss (array" in r.stdout


# --------------------------------------------------------------------------- --program
@pytest.mark.parametrize("names", [["switch_b"], ["switch_a", "sys_enter_c"]])
def test_program_selection_loads_only_those(test_objects, names):
    args = [a for n in names for a in ("--program", n)]
    with Running(test_objects("multi_prog"), "--json", *args) as run:
        ids = run.wait_attached(len(names))
        time.sleep(0.05)
        trigger(2)
        held = fdinfo_ids(run.proc.pid)
        names_in_kernel = sorted(_prog_name(i) for i in held["prog"])
        assert names_in_kernel == sorted(names)
        assert len(held["link"]) == len(names)
        assert run.stop() == 130, run.stderr  # cut short by SIGINT before -d was up: 128 + 2
    report = run.json()
    assert sorted(p["name"] for p in report["programs"]) == sorted(names)
    hits = by_name(report["maps"])[".bss"]["entries"][0]["value"]
    letters = {n[-1] for n in names}
    assert {k for k, v in hits.items() if v > 0} == {f"hits_{c}" for c in letters}
    assert_gone(as_id_sets(ids))


def _prog_name(prog_id):
    fd = syscall.prog_get_fd_by_id(prog_id)
    try:
        return syscall.obj_get_info(fd, "prog")["name"]
    finally:
        os.close(fd)


def test_program_unknown_name_is_an_error_listing_names(test_objects):
    r = run_load(test_objects("multi_prog"), "--program", "switch_z")
    assert r.returncode == 2  # the command line's fault: a usage error, as a --set of no variable
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert "Error: Invalid value for --program" in r.stderr
    for name in ("switch_z", "switch_a", "switch_b", "sys_enter_c", "switch_d"):
        assert name in r.stderr


# --------------------------------------------------------------------------- exit codes
def test_verifier_reject_exit_status_and_message(test_objects):
    r = run_load(test_objects("verifier_reject"), "--json")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    # --json still prints a document: the error, which also goes to stderr
    assert json.loads(r.stdout)["error"].startswith("the verifier rejected program 'bad_deref'")
    assert r.stderr.startswith("error: the verifier rejected program 'bad_deref'")
    assert "REJECT_HERE" in r.stderr and "map_value_or_null" in r.stderr
    assert re.search(r"verifier_reject\.bpf\.c:\d+: return \*v > 0; /\* REJECT_HERE \*/", r.stderr)

    r = run_load(test_objects("verifier_reject"), "--program", "good_prog", "--json")
    assert r.returncode == 0, r.stderr
    (prog,) = json.loads(r.stdout)["programs"]
    assert prog["name"] == "good_prog" and prog["attached"] is True


def test_bad_inputs_exit_codes(test_objects, tmp_path):
    not_elf = tmp_path / "not_elf.bpf.o"
    not_elf.write_bytes(b"\x7fELF" + os.urandom(200))
    r = run_load(not_elf)
    assert r.returncode == 1 and r.stderr.startswith("error:") and "Traceback" not in r.stderr

    r = run_load(tmp_path / "missing.bpf.o")
    assert r.returncode == 2 and "does not exist" in r.stderr

    rodata = test_objects("rodata")
    cases = [
        (["--set", "nope=1"], 2, "nope"),
        (["--set", "novalue"], 2, "NAME=VALUE"),
        (["--set", "tag=" + "x" * 40], 2, "tag"),  # a value its variable cannot hold
        (["--max-entries", "nomap=4"], 2, "nomap"),
        (["--max-entries", "records=abc"], 2, "abc"),
    ]
    for args, code, needle in cases:
        r = run_load(rodata, *args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stdout == ""


def test_max_entries_reaches_the_kernel(test_objects):
    with Running(test_objects("ringbuf"), "--json", "--max-entries", "records=8192") as run:
        ids = run.wait_attached(1)
        rings = [f for f in ids["map"].values() if f["map_type"] == "27"]
        assert [int(f["max_entries"]) for f in rings] == [8192]
        assert run.stop(signal.SIGTERM) == 143, run.stderr
    rec = by_name(run.json()["maps"])["records"]
    assert (rec["type"], rec["max_entries"], rec["entries"]) == ("ringbuf", 8192, None)
    assert_gone(as_id_sets(ids))


def test_no_attach_loads_but_does_not_attach(test_objects):
    with Running(test_objects("tp_btf_counter"), "--json", "--no-attach") as run:
        ids = run.wait_loaded(1)
        assert len(ids["prog"]) == 1 and not ids["link"]
        assert run.stop() == 130, run.stderr  # cut short by SIGINT before -d was up: 128 + 2
    (prog,) = run.json()["programs"]
    assert prog["attached"] is False and prog["run_cnt"] == 0
    switches = by_name(run.json()["maps"])[".bss"]["entries"][0]["value"]["switches"]
    assert switches == 0  # never ran
    assert_gone(as_id_sets(ids))


# --------------------------------------------------------------------------- --explain
def test_explain_tells_every_step(test_objects):
    r = run_load(test_objects("core_task"), "--explain", "--json")
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)  # the trace goes to stderr only
    lines = r.stderr.splitlines()
    steps = {m.group(1) for m in (re.match(r"^\[(\w+)\s*\]", l) for l in lines) if m}
    assert {"elf", "btf", "map", "reloc", "core", "syscall", "close"} <= steps
    assert steps & {"prog", "verifier"}
    text = r.stderr
    # sections found
    assert re.search(r"^\[elf\s*\] .*core_task\.bpf\.o: \d+ sections", text, re.M)
    assert re.search(r"^\s+raw_tp/sys_enter\s+\(?\d+ bytes.*code", text, re.M)
    assert re.search(r"^\s+\.BTF\.ext\s+\(?\d+ bytes", text, re.M)
    # each map: create attributes and fd
    assert re.search(r"BPF_MAP_CREATE type=hash key=4 value=40 max_entries=64 .*name=seen.* -> fd \d+", text)
    assert re.search(r"^\[map\s*\] \.rodata: .*BPF_MAP_FREEZE", text, re.M)
    # relocations: instruction, symbol, before -> after
    assert re.search(r"^\s+insn\s+\d+: map seen: .* ll\s+->\s+r1 = map seen \(fd at load\)", text, re.M)
    assert re.search(r"^\s+insn\s+\d+: data target_pid: .*->\s+r1 = map_value\(\.rodata\) \+ 0", text, re.M)
    assert re.search(r"^\s+insn\s+\d+: seen: r1 = map_fd \d+ ll", text, re.M)  # the fd, once the map exists
    # CO-RE: local type and access string -> kernel offset, and the patched instruction
    assert re.search(r"^\[core\s*\] .*insn \d+: (byte_off )?struct task_struct\.tgid \(0:\d+ @ byte \d+\) -> "
                     r"struct task_struct\.tgid", text, re.M)
    assert re.search(r"^\[core\s*\] .*field_exists struct task_struct\.pid", text, re.M)
    assert re.search(r"^\s+r1 = \d+\s+->\s+r1 = \d+", text, re.M)
    # program load with instruction count and verifier statistics
    assert re.search(r"BPF_PROG_LOAD .*name=read_task insns=\d+ .*-> fd \d+", text)
    assert re.search(r"^\[(prog|verifier)\s*\] .*read_task.*\b\d+ instructions", text, re.M)
    assert re.search(r"^\s+processed \d+ insns", text, re.M)
    # attach: the syscall and its arguments
    assert re.search(r"BPF_RAW_TRACEPOINT_OPEN name=sys_enter prog_fd=\d+ -> link fd \d+", text)


def test_explain_tracepoint_attach(test_objects):
    r = run_load(test_objects("seed_style"), "--explain")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\[attach\s*\] tp/sched/sched_switch: tracepoint id \d+", r.stderr, re.M)
    assert re.search(r"perf_event_open type=2 config=\d+ .*-> fd \d+", r.stderr)
    assert re.search(r"BPF_LINK_CREATE prog_fd=\d+ target_fd=\d+ .*-> link fd \d+", r.stderr)


@pytest.mark.parametrize("args, error, status", [
    (["/etc/passwd"], "not an ELF file", 1),
    # a size asked for on the command line that this machine cannot take: a usage error
    (["tests/bpf/build/maps_all.bpf.o", "--max-entries", "hash_map=999999999"], "would take about", 2),
])
def test_a_failed_load_with_json_still_prints_a_document(args, error, status):
    r = run_load(*args, "--json")
    assert r.returncode == status and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == 1 and error in doc["error"] and doc["error_type"]


def test_a_map_with_no_lookup_is_reported_not_fatal():
    """A cgroup array cannot be read from user space: the object still loads
    and attaches (exit 0), the map says why, and the other map is read."""
    r = run_load("tests/bpf/build/unreadable_maps.bpf.o", "--json")
    assert r.returncode == 0, r.stderr
    maps = {m["name"]: m for m in json.loads(r.stdout)["maps"]}
    assert maps["cgroups"]["entries"] is None and "cannot be read from user space" in maps["cgroups"]["entries_error"]
    assert [e["key"] for e in maps["counts"]["entries"]] == [0, 1]
    text = run_load("tests/bpf/build/unreadable_maps.bpf.o")
    assert text.returncode == 0 and "cannot be read from user space" in text.stdout


def test_long_map_values_are_shown_in_brief():
    """The monitor's own 256 KB .bss is one value: the text report shows its
    first slots and a count; --full shows it all."""
    r = run_load("ebpf_energy/bpf/energy_monitor.bpf.o", "--no-attach")
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) < 10_000 and "more\"" in r.stdout
    full = run_load("ebpf_energy/bpf/energy_monitor.bpf.o", "--no-attach", "--full")
    assert max(len(line) for line in full.stdout.splitlines()) > 100_000


def test_pinned_maps_are_said_and_unpin_removes_them():
    """A pin-by-name map outlives `load`: the report says where and how to
    remove it; --unpin removes it before exiting."""
    pin = "/sys/fs/bpf/pinned_arr"
    try:
        r = run_load("tests/bpf/build/core_maps.bpf.o", "--json")
        assert r.returncode == 0, r.stderr
        maps = {m["name"]: m for m in json.loads(r.stdout)["maps"]}
        assert maps["pinned_arr"]["pinned"] == pin and os.path.exists(pin)
        text = run_load("tests/bpf/build/core_maps.bpf.o")
        assert f"pinned at {pin}: it stays in the kernel after exit" in text.stdout
        r = run_load("tests/bpf/build/core_maps.bpf.o", "--unpin", "--json")
        assert r.returncode == 0 and not os.path.exists(pin)
        assert {m["name"]: m for m in json.loads(r.stdout)["maps"]}["pinned_arr"]["pinned"] is None
    finally:
        if os.path.exists(pin):
            os.unlink(pin)


def test_a_poisoned_core_relocation_is_named():
    """Without --explain, the error says which relocation failed (program,
    instruction, type and field), not only the verifier's unknown#195896080."""
    r = run_load("tests/bpf/build/core_poisoned.bpf.o")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "did not resolve against this kernel" in r.stderr
    assert "program read_missing" in r.stderr and "task_struct___no_such.no_such_field" in r.stderr
    assert "field not found in target" in r.stderr


def test_a_ring_buffer_size_is_rounded_up_as_the_kernel_wants_it():
    """--max-entries records=1000 is no EINVAL: rounded up to a power-of-two
    multiple of the page (as libbpf does), and the report gives the size used."""
    r = run_load("tests/bpf/build/ringbuf.bpf.o", "--max-entries", "records=1000", "--json")
    assert r.returncode == 0, r.stderr
    rec = by_name(json.loads(r.stdout)["maps"])["records"]
    page = os.sysconf("SC_PAGE_SIZE")
    assert rec["max_entries"] == page and rec["entries"] is None


def test_without_stats_the_table_shows_no_runs():
    """RUNS 0 looks measured: without --stats the columns say '-'."""
    r = run_load("tests/bpf/build/rodata.bpf.o", "--no-attach")
    row = [ln for ln in r.stdout.splitlines() if ln.startswith("use_settings")][0].split()
    assert row[-2:] == ["-", "-"]


def test_set_takes_arrays_as_json():
    r = run_load("tests/bpf/build/globals.bpf.o", "--no-attach", "--set", "data_array=[9,8,7,6]", "--json")
    assert r.returncode == 0, r.stderr
    data = by_name(json.loads(r.stdout)["maps"])[".data"]["entries"][0]["value"]
    assert data["data_array"] == [9, 8, 7, 6]
    bad = run_load("tests/bpf/build/globals.bpf.o", "--no-attach", "--set", "data_array=[9,8")
    assert bad.returncode == 2 and "is not valid JSON" in bad.stderr


def test_a_kprobe_on_a_kernel_without_kprobes_says_so():
    """This kernel has no kprobes: the error says that, not that the loader cannot attach kprobes."""
    if os.path.isdir("/sys/bus/event_source/devices/kprobe"):
        pytest.fail("this test is for a kernel without kprobes (CONFIG_KPROBES off), as this machine's is")
    r = run_load("tests/bpf/build/kprobe_only.bpf.o")
    assert r.returncode == 1 and "this kernel has no kprobes" in r.stderr and "Traceback" not in r.stderr


def test_a_reader_that_goes_away_ends_load_quietly_with_0(test_objects):
    """`load X --dry-run | head -1`: exit 0 and no message, as every other
    command (click itself turned the broken pipe into a silent exit 1)."""
    import subprocess
    import sys

    import fcntl

    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: the ~18 KB report cannot all fit before we go
    p = subprocess.Popen([sys.executable, "-m", "ebpf_energy", "load", test_objects("net_progs"), "--dry-run"],
                         stdout=w, stderr=subprocess.PIPE)
    os.close(w)
    p.stdout = os.fdopen(r, "rb")
    p.stdout.readline()
    p.stdout.close()  # the reader is gone before the rest of the report is written
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and err == "", err


@pytest.mark.parametrize("args, says", [
    (["--program", "nosuch"], "Invalid value for --program: no program nosuch in"),
    (["--dry-run", "--program", "nosuch"], "no program nosuch"),
    (["--max-entries", "cpu_switches=0"], "max_entries is from 1 to 4,294,967,295"),
    (["--max-entries", "cpu_switches=0x100000000"], "max_entries is from 1 to 4,294,967,295"),
    (["--set", "switches=70000000000000000000000"], "Invalid value for --set: .bss.switches: __u64: 7"),
    (["--set", "switches=x"], "expected an integer"),
])
def test_a_value_the_object_cannot_take_is_a_usage_error(args, says):
    """Found once the object is open, still the command line's fault: exit 2, one message, nothing loaded."""
    r = run_load(os.path.join(ROOT, "tests", "bpf", "build", "tp_btf_counter.bpf.o"), "--duration", "0", *args)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_loading_stops_it_even_with_no_duration(monkeypatch, capsys, sig):
    """-d 0 used to swallow a signal that came during load and attach (exit 0).
    The signal is sent from inside the load, so the moment is exact."""
    from ebpf_energy.commands import load_run
    from ebpf_energy.loader.object import BpfObject

    real = BpfObject.load

    def load_then_signal(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        os.kill(os.getpid(), sig)
        return out

    monkeypatch.setattr(BpfObject, "load", load_then_signal)
    with pytest.raises(SystemExit) as stop:
        load_run.run(str(ROOT / "tests" / "bpf" / "build" / "tp_btf_counter.bpf.o"), duration=0.0, as_json=True)
    out = capsys.readouterr()
    assert stop.value.code == 128 + sig
    assert json.loads(out.out)["programs"][0]["name"] == "count_switch"  # the report is out
    assert f"stopped by {signal.Signals(sig).name} while loading" in out.err


@pytest.mark.parametrize("args, says", [
    (["/dev/zero", "--dry-run"], "OBJECT: /dev/zero is not a regular file"),
    (["OBJ", "--dry-run", "--btf", "/dev/zero"], "--btf: /dev/zero is not a regular file"),
    (["OBJ", "--dry-run", "-d", "5"], "--duration does nothing with --dry-run"),
    (["OBJ", "--dry-run", "--stats", "--unpin"], "--stats, --unpin do nothing with --dry-run"),
    (["OBJ", "--no-attach", "--xdp-mode", "native"], "--xdp-mode says how to attach"),
    (["OBJ", "--dry-run", "--set", "x=" + "[" * 50000 + "]" * 50000], "nested too deeply"),
])
def test_inputs_that_cannot_work_are_refused_in_one_line(args, says):
    """A device was read without end (/dev/zero: MemoryError), a FIFO hung; options that do nothing were ignored."""
    obj = str(ROOT / "tests" / "bpf" / "build" / "globals.bpf.o")
    r = run_load(*[obj if a == "OBJ" else a for a in args], timeout=60)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "obj.bpf.o"
    os.mkfifo(fifo)
    r = run_load(fifo, "--dry-run", "--json", timeout=60)
    assert r.returncode == 2 and "is not a regular file" in r.stderr
    assert json.loads(r.stdout)["error_type"] == "UsageError"  # --json: a document, whatever went wrong


@pytest.mark.kernel
def test_a_full_stderr_is_exit_74_not_a_bare_1():
    """--explain writes to stderr: when that is the full disk, the status says so."""
    with open("/dev/full", "w") as full:
        r = subprocess.run(CMD + [str(ROOT / "tests" / "bpf" / "build" / "tp_btf_counter.bpf.o"), "--explain"],
                           stdout=subprocess.DEVNULL, stderr=full, timeout=60, cwd=ROOT)
    assert r.returncode == 74
