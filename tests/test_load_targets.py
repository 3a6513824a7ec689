"""``ebpf-energy load --interface/--cgroup/--netns/--target``: programs whose
section names no target, attached where the command line says, for real.

Each run loads tests/bpf/net_progs.bpf.o (every program counts the UDP
datagrams to .rodata ``port``) inside a network namespace this test makes
(the child inherits it from the forking thread), waits until the child holds
its attachment, sends N datagrams over lo, stops it with a signal and reads
the counters from its JSON report: exactly N (a packet socket on lo sees
each datagram twice, sent and received: 2N).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ebpf_energy.loader import syscall

from test_load_cli import ATTACH_TIMEOUT_S, Running, by_name, run_load
from ebpf_energy.loader.link.perf_event import online_cpus
from test_links_net import CGROUP2, N, own_netns, send_and_receive
from test_links_uprobe import N as UPROBE_N, Child, probed  # noqa: F401 (a fixture)
from test_syscall import wait_gone

pytestmark = pytest.mark.kernel
PORT = 47321
EXIT_BAD_TARGET = 2


def packet_sockets():
    """The packet sockets of this thread's network namespace: [(proto, ifindex)]."""
    with open("/proc/thread-self/net/packet") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return [(int(r[3], 16), int(r[4])) for r in rows]


def wait_packet_socket(run):
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while time.monotonic() < deadline:
        if (3, 1) in packet_sockets():  # ETH_P_ALL on lo: bound after the filter went on
            return
        assert run.proc.poll() is None, (run.finish(), run.stderr)
        time.sleep(0.01)
    raise AssertionError(f"no packet socket on lo after {ATTACH_TIMEOUT_S}s")


@pytest.fixture
def net_progs(test_objects):
    return test_objects("net_progs")


def net_load(obj, program, *args):
    return Running(obj, "--json", "--set", f"port={PORT}", "--program", program, *args)


def _links_gone(ids):
    for link_id in ids["link"]:
        wait_gone(syscall.link_get_fd_by_id, link_id)
    for prog_id in ids["prog"]:
        wait_gone(syscall.prog_get_fd_by_id, prog_id)


# ----------------------------------------------------------------------------- interfaces
INTERFACE_CASES = {  # program -> (options, counter, expected count, link type)
    "count_xdp": (["--interface", "lo"], "xdp_pkts", N, "xdp"),
    "count_tcx": (["--interface", "lo"], "tcx_pkts", N, "tcx"),
    "count_tc": (["--target", "count_tc=lo:egress"], "tc_pkts", N, "tcx"),
}


@pytest.mark.parametrize("program", sorted(INTERFACE_CASES))
def test_interface_target_counts_exactly_and_detaches(net_progs, program):
    args, counter, expected, link_type = INTERFACE_CASES[program]
    with own_netns():
        with net_load(net_progs, program, *args) as run:
            ids = run.wait_attached(1)
            send_and_receive(port=PORT)
            assert run.stop() == 130, run.stderr
        _links_gone(ids)
        send_and_receive(port=PORT)  # nothing of it left on lo
    report = run.json()
    (prog,) = report["programs"]
    assert prog["attached"] and prog["link"]["type"] == link_type and "needs" not in prog
    assert prog["target"]["kind"] == "interface" and prog["target"]["value"] == "lo"
    assert prog["target"]["ifindex"] == 1
    assert report["maps"][1]["entries"][0]["value"][counter] == expected


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_socket_filter_on_an_interface_gets_its_own_packet_socket(net_progs, sig, status):
    with own_netns():
        with net_load(net_progs, "count_socket", "--interface", "lo") as run:
            wait_packet_socket(run)
            ids = run.wait_loaded(1)
            send_and_receive(port=PORT)
            assert run.stop(sig) == status, run.stderr
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while packet_sockets() and time.monotonic() < deadline:  # the socket goes with the process
            time.sleep(0.01)
        assert packet_sockets() == []
        _links_gone(ids)
    if sig != signal.SIGKILL:
        (prog,) = run.json()["programs"]
        assert prog["attached"] and prog["target"]["from"] == "--interface"
        assert prog["link"]["target"] == "socket filter on lo"
        assert run.json()["maps"][1]["entries"][0]["value"]["socket_pkts"] == 2 * N  # sent and received


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_named_links_go_on_any_exit(net_progs, sig, status):
    with own_netns():
        with net_load(net_progs, "count_xdp", "--interface", "lo", "--program", "count_tcx") as run:
            ids = run.wait_attached(2)
            assert run.stop(sig) == status, run.stderr
        _links_gone(ids)


def test_xdp_mode_native_on_a_veth(net_progs):
    with own_netns():
        subprocess.run(["ip", "link", "add", "tgva", "type", "veth", "peer", "name", "tgvb"], check=True)
        try:
            with net_load(net_progs, "count_xdp", "--interface", "tgvb", "--xdp-mode", "native") as run:
                ids = run.wait_attached(1)
                assert run.stop() == 130, run.stderr
            _links_gone(ids)
            (prog,) = run.json()["programs"]
            assert prog["attached"] and prog["link"]["target"] == "xdp on tgvb"
        finally:
            subprocess.run(["ip", "link", "del", "tgva"], check=True)


# ----------------------------------------------------------------------------- cgroup, netns, netfilter
def test_cgroup_target_counts_a_member_process(net_progs):
    path = os.path.join(CGROUP2, f"ebpf-energy-targets-{os.getpid()}")
    os.mkdir(path)
    try:
        with net_load(net_progs, "count_cgroup", "--cgroup", path) as run:
            ids = run.wait_attached(1)
            child = (f"import os, socket\n"
                     f"open({os.path.join(path, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
                     f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                     f"for i in range({N}): s.sendto(b'c', ('127.0.0.1', {PORT}))\n")
            subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
            send_and_receive(port=PORT)  # this process is not in the cgroup: not counted
            assert run.stop() == 130, run.stderr
        _links_gone(ids)
    finally:
        os.rmdir(path)
    (prog,) = run.json()["programs"]
    assert prog["attached"] and prog["link"]["type"] == "cgroup"
    assert prog["target"] == {"kind": "cgroup", "value": path, "from": "--cgroup", "path": path}
    assert run.json()["maps"][1]["entries"][0]["value"]["cgroup_pkts"] == N


def _thread_netns():
    return f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"


@pytest.mark.parametrize("explicit", [False, True])
def test_sk_lookup_goes_on_the_callers_netns_or_the_one_named(net_progs, explicit):
    with own_netns():
        args = ["--netns", _thread_netns()] if explicit else []
        with net_load(net_progs, "count_lookup", *args) as run:
            ids = run.wait_attached(1)
            send_and_receive(port=PORT)
            assert run.stop() == 130, run.stderr
        _links_gone(ids)
        inode = os.stat(_thread_netns()).st_ino
    (prog,) = run.json()["programs"]
    assert prog["attached"] and prog["link"]["type"] == "netns"
    assert prog["target"]["kind"] == "netns" and prog["target"]["inode"] == inode
    assert prog["target"]["from"] == ("--netns" if explicit else "default")
    assert run.json()["maps"][1]["entries"][0]["value"]["lookups"] == N


def test_netfilter_hook_through_target(net_progs):
    with own_netns():
        with net_load(net_progs, "count_nf", "--target", "count_nf=ipv4:output:-100") as run:
            ids = run.wait_attached(1)
            send_and_receive(port=PORT)
            assert run.stop() == 130, run.stderr
        _links_gone(ids)
    (prog,) = run.json()["programs"]
    assert prog["target"] == {"kind": "netfilter", "value": "ipv4:output:-100", "from": "--target",
                              "family": "ipv4", "hook": "output", "priority": -100}
    assert run.json()["maps"][1]["entries"][0]["value"]["nf_pkts"] == N


def test_explain_and_text_show_each_target(net_progs):
    with own_netns():
        r = run_load(net_progs, "--explain", "--interface", "lo", "--target", "count_tc=lo:egress",
                     "--target", "count_nf=ipv4:input", "--program", "count_xdp", "--program", "count_tc",
                     "--program", "count_nf", "--program", "count_lookup", "--program", "count_cgroup")
    assert r.returncode == 0, r.stderr
    assert "count_xdp: section 'xdp' on a network interface lo (from --interface)" in r.stderr
    assert "count_tc: section 'tc' on a network interface lo (from --target)" in r.stderr
    assert "count_nf: section 'netfilter' on a netfilter hook ipv4:input (from --target)" in r.stderr
    assert "count_lookup: section 'sk_lookup' on a network namespace /proc/thread-self/ns/net (from default)" \
        in r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:6] if line.strip()}
    assert rows["count_xdp"][4] == "yes" and rows["count_xdp"][-1] == "lo"
    assert rows["count_nf"][-1] == "ipv4:input"
    assert rows["count_cgroup"][4] == "manual" and rows["count_cgroup"][-1] == "-"
    assert ("note: program count_cgroup (cgroup_skb/egress) is loaded, not attached: it needs a cgroup"
            in r.stderr and "give it with --cgroup DIR or --target count_cgroup=CGROUP_DIR" in r.stderr)


# ----------------------------------------------------------------------------- bad targets
BAD = [
    (["--interface", "nope0"], "--interface nope0: no network interface 'nope0' in this network namespace"),
    (["--cgroup", "/tmp"], "--cgroup /tmp: not a cgroup v2 directory"),
    (["--cgroup", "/nonexistent/cg"], "--cgroup /nonexistent/cg: no such directory"),
    (["--netns", "/tmp"], "--netns /tmp: not a network namespace"),
    (["--netns", "/proc/self/ns/pid"], "--netns /proc/self/ns/pid: not a network namespace"),
    (["--netns", "/nonexistent"], "--netns /nonexistent: cannot open it: No such file or directory"),
    (["--target", "nope=lo"], "--target nope=lo: no program 'nope' in this object (programs: count_socket,"),
    (["--target", "count_xdp"], "--target count_xdp: expected PROG=VALUE"),
    (["--target", "count_xdp=lo:ingress"], "--target count_xdp=lo:ingress: only tc/tcx programs take a direction"),
    (["--target", "count_tc=lo:sideways"], "--target count_tc=lo:sideways: 'lo:sideways' is not an interface name"),
    (["--target", "count_nf=lo"], "--target count_nf=lo: expected FAMILY:HOOK[:PRIORITY]"),
    (["--target", "count_nf=ipv5:output"], "--target count_nf=ipv5:output: family is one of ipv4, ipv6"),
    (["--target", "count_nf=ipv4:output:99999999999"], "the priority is between -2147483647 and 2147483646"),
    (["--target", "count_xdp=lo", "--target", "count_xdp=lo"], "program count_xdp has a target already"),
    (["--program", "count_xdp", "--target", "count_tcx=lo"], "program count_tcx is not loaded (add --program"),
    (["--program", "count_xdp", "--cgroup", CGROUP2], f"--cgroup {CGROUP2}: no program loaded from this object "
                                                      "takes a cgroup"),
    (["--cgroup", ""], "--cgroup: the value is empty"),
    (["--interface", " "], "--interface: the value is empty"),
    (["--program", "count_tc", "--interface", "lo:ingress", "--xdp-mode", "generic"],
     "--xdp-mode generic: no xdp program of this object is attached to an interface"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_target_is_one_line_and_exit_2(net_progs, args, message):
    r = run_load(net_progs, *args)
    assert r.returncode == EXIT_BAD_TARGET, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: --") and message in r.stderr, r.stderr
    assert r.stdout == ""
    r = run_load(net_progs, "--json", *args)
    assert r.returncode == EXIT_BAD_TARGET and json.loads(r.stdout)["error_type"] == "BadTarget"


def test_a_target_for_a_program_that_takes_none(test_objects):
    r = run_load(test_objects("seed_style"), "--target", "handle_switch=lo")
    assert r.returncode == EXIT_BAD_TARGET
    assert r.stderr == ("error: --target handle_switch=lo: program handle_switch (tp/sched/sched_switch) takes "
                        "no target: its section names what it attaches to\n")
    r = run_load(test_objects("seed_style"), "--interface", "lo")
    assert r.returncode == EXIT_BAD_TARGET
    assert r.stderr == "error: --interface lo: no program loaded from this object takes a network interface\n"


def test_targets_need_attaching(net_progs):
    r = run_load(net_progs, "--no-attach", "--interface", "lo")
    assert r.returncode == 2 and "not with --dry-run or --no-attach" in r.stderr


def test_a_kernel_refusal_is_an_attach_error_not_a_bad_target(net_progs):
    """A target that exists but that the kernel refuses (xdp in native mode
    on lo, whose driver has no XDP) is the load's failure, exit 1, not a bad
    target."""
    with own_netns():
        r = run_load(net_progs, "--program", "count_xdp", "--interface", "lo", "--xdp-mode", "native", "--json")
    assert r.returncode == 1, r.stderr
    prog = by_name(json.loads(r.stdout)["programs"])["count_xdp"]
    assert not prog["attached"] and prog["error"].startswith("cannot attach xdp on lo in native mode: its driver "
                                                              "has no native XDP")
    assert "attach" not in prog and "needs" not in prog  # not "manual": it was given a target
    assert "error: program count_xdp (xdp) loaded but did not attach: cannot attach xdp on lo" in r.stderr
    assert "note:" not in r.stderr


def test_a_bare_uprobe_through_target(test_objects, probed):
    """SEC("uprobe") and SEC("uretprobe") name no function: --target gives
    PATH:FUNC; N calls of probed_add by the child counted, N returns."""
    child = Child(probed)
    try:
        with Running(test_objects("uprobes"), "--json", "--set", f"target_tgid={child.pid}",
                     "--program", "on_add", "--program", "on_add_ret",
                     "--target", f"on_add={probed}:probed_add", "--target", f"on_add_ret={probed}:probed_add") as run:
            ids = run.wait_attached(2)
            child.go()
            assert run.stop() == 130, run.stderr
        _links_gone(ids)
    finally:
        child.kill()
    progs = by_name(run.json()["programs"])
    assert progs["on_add"]["target"]["function"] == "probed_add" and progs["on_add"]["target"]["path"] == probed
    assert progs["on_add_ret"]["link"]["target"] == f"uretprobe/{probed}:probed_add"
    counts = by_name(run.json()["maps"])[".bss"]["entries"][0]["value"]
    assert counts["add_calls"] == counts["add_ret_calls"] == UPROBE_N
    assert counts["add_arg_sum"] == sum(i + 1000 for i in range(UPROBE_N))


def test_perf_event_through_target_is_one_link_per_cpu(test_objects):
    with Running(test_objects("perf_sample"), "--json", "--target", "on_sample=cpu-clock:199") as run:
        ids = run.wait_attached(len(online_cpus()))
        assert run.stop() == 130, run.stderr
    _links_gone(ids)
    (prog,) = run.json()["programs"]
    assert prog["target"] == {"kind": "event", "value": "cpu-clock:199", "from": "--target", "event": "cpu-clock",
                              "freq_hz": 199}
    assert prog["link"]["type"] == "perf_event" and prog["link"]["count"] == len(online_cpus())


@pytest.mark.parametrize("value,message", [("cycles", "unknown software event 'cycles' (known: cpu-clock,"),
                                           ("cpu-clock:0", "the frequency after ':' is a positive whole number")])
def test_a_bad_perf_event_target(test_objects, value, message):
    r = run_load(test_objects("perf_sample"), "--target", f"on_sample={value}")
    assert r.returncode == EXIT_BAD_TARGET and r.stderr.startswith(f"error: --target on_sample={value}: {message}")


def test_a_flow_dissector_goes_only_where_named(test_objects):
    """No default netns for a flow dissector (it takes over every flow of
    the namespace): loaded, not attached, until --netns names one."""
    obj = test_objects("spec_kinds")
    with own_netns():
        r = run_load(obj, "--program", "on_dissect", "--json")
        assert r.returncode == 0, r.stderr
        (prog,) = json.loads(r.stdout)["programs"]
        assert not prog["attached"] and prog["target"] is None and prog["needs"].startswith("a network namespace")
        assert "give it with --netns FILE or --target on_dissect=NETNS_FILE" in r.stderr
        r = run_load(obj, "--program", "on_dissect", "--netns", _thread_netns(), "--json")
    assert r.returncode == 0, r.stderr
    (prog,) = json.loads(r.stdout)["programs"]
    assert prog["attached"] and prog["link"]["type"] == "netns" and prog["target"]["from"] == "--netns"


@pytest.mark.parametrize("value, says", [
    ("libc.so.6:getppid+-1", "the offset into getppid must be 0 or more, not -1"),
    ("/etc/passwd:main", "cannot read /etc/passwd as an ELF file"),
    ("/bin/true:nosuchfunc", "no function 'nosuchfunc' in"),
    ("/tmp:main", "'/tmp' is a directory, not a binary"),
])
def test_a_bare_uprobe_target_is_checked_before_loading(test_objects, value, says):
    """The file and its function are resolved with the other targets, before the
    first bpf() call: exit 2, one line (a negative offset attached in the function before)."""
    r = run_load(test_objects("uprobes"), "--program", "on_add", "--target", f"on_add={value}")
    assert r.returncode == EXIT_BAD_TARGET, r.stderr
    assert r.stderr.count("\n") == 1 and says in r.stderr and r.stdout == ""
