"""Socket filters, tcx, xdp, cgroup, sk_lookup and netfilter links, for real:
traffic only on loopback, inside a network namespace this test makes (or
from a child in a test cgroup). Every program counts the UDP datagrams to
one port and lets them through, so N sent is exactly N counted."""

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from ebpf_energy.loader import syscall
from ebpf_energy.loader.errors import AttachError
from ebpf_energy.loader.link import cgroup, netfilter, sk_lookup, socket_filter, tcx, xdp
from ebpf_energy.loader.object import BpfObject

from test_syscall import wait_gone

pytestmark = pytest.mark.kernel
N = 17
PORT = 47123
CLONE_NEWNET = 0x40000000
CGROUP2 = "/sys/fs/cgroup/unified"
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def own_netns():
    """This thread in a fresh network namespace with lo up; back on exit
    (the namespace goes with its last socket and link)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # forked from this thread: same netns
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)


def send_and_receive(n=N, port=PORT, rx=None):
    """n datagrams to 127.0.0.1:port, all received (so every hook saw them)."""
    own = rx is None
    if own:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", port))
    rx.settimeout(60)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for i in range(n):
            tx.sendto(b"x%d" % i, ("127.0.0.1", port))
        got = [rx.recv(64) for _ in range(n)]
    if own:
        rx.close()
    assert got == [b"x%d" % i for i in range(n)]


@pytest.fixture
def net_obj(test_objects):
    with BpfObject.open(test_objects("net_progs")) as obj:
        obj.rodata["port"] = PORT
        obj.load()
        obj.attach()  # every program here needs more than its section: none attaches
        assert not any(p.attached for p in obj.programs.values())
        yield obj
        ids = [p.info()["id"] for p in obj.programs.values()]
    for i in ids:
        wait_gone(syscall.prog_get_fd_by_id, i)


def _closed_and_gone(link):
    link_id = link.info()["id"]
    link.close()
    wait_gone(syscall.link_get_fd_by_id, link_id)


def test_socket_filter_counts_what_its_socket_receives(net_obj):
    with own_netns():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", PORT))
        with socket_filter.attach_socket(net_obj.programs["count_socket"].fd, rx):
            send_and_receive(rx=rx)
        send_and_receive(rx=rx)  # detached: no longer counted
        rx.close()
    assert net_obj.bss["socket_pkts"] == N


LINKED = {  # program -> (how it attaches inside the test's netns, link type, counter)
    "count_tcx": (lambda fd: tcx.attach_tcx(fd, "lo", "ingress"), "tcx", "tcx_pkts"),
    "count_tc": (lambda fd: tcx.attach_tcx(fd, "lo", "egress"), "tcx", "tc_pkts"),
    "count_xdp": (lambda fd: xdp.attach_xdp(fd, "lo"), "xdp", "xdp_pkts"),
    "count_lookup": (lambda fd: sk_lookup.attach_netns(fd), "netns", "lookups"),
    "count_nf": (lambda fd: netfilter.attach_netfilter(fd, "ipv4", "output", priority=-100), "netfilter", "nf_pkts"),
}


@pytest.mark.parametrize("name", sorted(LINKED))
def test_link_on_lo_in_own_netns_counts_exactly_while_attached(net_obj, name):
    attach, link_type, counter = LINKED[name]
    with own_netns():
        link = attach(net_obj.programs[name].fd)
        assert link.info()["type_name"] == link_type
        send_and_receive()
        _closed_and_gone(link)
        send_and_receive()  # detached: not counted
    assert net_obj.bss[counter] == N


def _frame(src_mac, dst_mac, port, payload=b"veth"):
    """An Ethernet + IPv4 + UDP frame to ``port`` (checksums left 0: only XDP looks at it)."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton("10.99.0.1"), socket.inet_aton("10.99.0.2"))
    return dst_mac + src_mac + struct.pack("!H", 0x0800) + ip + udp


def _mac(ifname):
    """SIOCGIFHWADDR in this thread's netns (/sys shows the netns it was mounted in)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s.fileno(), 0x8927, struct.pack("16s16x", ifname.encode()))
    return ifreq[18:24]


def test_xdp_native_on_a_veth(net_obj):
    """XDP in the driver (veth's native mode): frames sent into one end of a
    veth pair are seen by the program on the other end, N of N."""
    counted = lambda: net_obj.bss["xdp_pkts"]  # noqa: E731
    with own_netns():
        subprocess.run(["ip", "link", "add", "eeva", "type", "veth", "peer", "name", "eevb"], check=True)
        for dev in ("eeva", "eevb"):
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        with xdp.attach_xdp(net_obj.programs["count_xdp"].fd, "eevb", mode="native") as link, \
                socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as tx:
            assert link.info()["type_name"] == "xdp"
            tx.bind(("eeva", 0))
            for _ in range(N):
                tx.send(_frame(_mac("eeva"), _mac("eevb"), PORT))
            deadline = time.monotonic() + 60  # the veth's NAPI poll runs in softirq, after send()
            while counted() < N and time.monotonic() < deadline:
                time.sleep(0.01)
            assert counted() == N
            _closed_and_gone(link)
            tx.send(_frame(_mac("eeva"), _mac("eevb"), PORT))
        subprocess.run(["ip", "link", "del", "eeva"], check=True)
    assert counted() == N


def test_a_link_given_to_its_program_closes_with_the_object(test_objects):
    with own_netns():
        with BpfObject.open(test_objects("net_progs")) as obj:
            obj.load(only=["count_tcx"])
            prog = obj.programs["count_tcx"]
            prog.link = tcx.attach_tcx(prog.fd, "lo", "egress")
            assert prog.attached
            link_id = prog.link.info()["id"]
    wait_gone(syscall.link_get_fd_by_id, link_id)


def test_netfilter_hook_names_are_checked(net_obj):
    with pytest.raises(AttachError, match="family is one of"):
        netfilter.attach_netfilter(net_obj.programs["count_nf"].fd, "ipv5", "output")


def test_cgroup_skb_egress_counts_a_member_process(net_obj):
    path = os.path.join(CGROUP2, f"ebpf-energy-links-{os.getpid()}")
    os.mkdir(path)
    try:
        link = cgroup.attach_cgroup(net_obj.programs["count_cgroup"].fd, path, 1)  # BPF_CGROUP_INET_EGRESS
        assert link.info()["type_name"] == "cgroup"
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        net_obj_port = PORT
        child = (f"import os, socket\n"
                 f"open({os.path.join(path, 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
                 f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 f"for i in range({N}): s.sendto(b'c', ('127.0.0.1', {port}))\n"
                 f"for i in range({N}): s.sendto(b'o', ('127.0.0.1', {net_obj_port}))\n")
        subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
        send_and_receive()  # this process is not in the cgroup: not counted
        rx.close()
        assert net_obj.bss["cgroup_pkts"] == N  # only the child's datagrams to PORT
        _closed_and_gone(link)
    finally:
        os.rmdir(path)


def test_attaching_to_a_missing_target_is_one_sentence(net_obj):
    with pytest.raises(AttachError, match="no network interface 'nope0'"):
        tcx.attach_tcx(net_obj.programs["count_tcx"].fd, "nope0")
    with pytest.raises(AttachError, match="cannot open cgroup /nonexistent"):
        cgroup.attach_cgroup(net_obj.programs["count_cgroup"].fd, "/nonexistent", 1)
    with pytest.raises(AttachError, match="cannot attach xdp on lo"):
        xdp.attach_xdp(net_obj.programs["count_tcx"].fd, "lo")  # a tc program on an xdp hook
