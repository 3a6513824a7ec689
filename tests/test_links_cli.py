"""``ebpf-energy load`` over every attach kind: what attaches from the
section name alone, what is loaded and not attached (and why), the errors
of kinds this kernel lacks, and nothing left attached after any exit."""

import json
import re
import signal

import pytest

from ebpf_energy.loader import syscall

from test_links_net import own_netns
from test_load_cli import Running, by_name, run_load
from test_syscall import wait_gone

pytestmark = pytest.mark.kernel


def test_programs_that_need_more_are_loaded_and_say_why(test_objects):
    with own_netns():  # sk_lookup goes on the caller's network namespace: this test's own
        r = run_load(test_objects("net_progs"), "--json")
    assert r.returncode == 0, r.stderr  # not attached is not a failure when the section names no target
    progs = by_name(json.loads(r.stdout)["programs"])
    wants = {"count_socket": "a socket", "count_tcx": "a network interface", "count_tc": "a network interface", "count_xdp": "a network interface",
             "count_cgroup": "a cgroup", "count_nf": "a netfilter hook"}
    lookup = progs.pop("count_lookup")
    assert lookup["attached"] and lookup["target"]["kind"] == "netns" and lookup["target"]["from"] == "default"
    for name, need in wants.items():
        p = progs[name]
        assert p["loaded"] and not p["attached"] and p["attach"] == "manual" and p["needs"].startswith(need)
        assert f"note: program {name} ({p['section']}) is loaded, not attached: it needs {need}" in r.stderr
    for p in progs.values():
        wait_gone(syscall.prog_get_fd_by_id, p["id"])


def test_iterator_output_is_in_the_report(test_objects):
    with Running(test_objects("iters"), "--json", duration=0) as run:
        assert run.finish(120) == 0, run.stderr
        progs = by_name(run.json()["programs"])
        pid = run.proc.pid
    link = progs["dump_tasks"]["link"]
    assert link["kind"] == "iter" and link["type"] == "iter" and isinstance(link["id"], int)
    assert re.search(rf"^{pid} {pid} ", link["output"], re.M)  # the loader's own process is a task
    assert re.search(r"^\d+ \d+ numbers$", progs["dump_maps"]["link"]["output"], re.M)
    r = run_load(test_objects("iters"))
    assert "iterator dump_tasks (iter/task) output:" in r.stdout


def test_uprobes_from_section_names_and_explain(test_objects):
    r = run_load(test_objects("uprobes"), "--json", "--explain")
    assert r.returncode == 0, r.stderr
    progs = by_name(json.loads(r.stdout)["programs"])
    for name in ("on_getppid", "on_main"):
        assert progs[name]["attached"] and progs[name]["link"]["type"] == "perf_event"
    assert progs["on_add"]["needs"].startswith("a binary and a function")
    assert re.search(r"libc\.so\.6:getppid: vaddr 0x[0-9a-f]+ in /\S+libc\S* -> file offset 0x[0-9a-f]+", r.stderr)
    assert re.search(r"perf_event_open type=\d+ config=0x0 config1=0x[0-9a-f]+ config2=0x[0-9a-f]+", r.stderr)
    assert re.search(r"BPF_LINK_CREATE prog_fd=\d+ target_fd=\d+ attach_type=41 .*-> link fd \d+", r.stderr)


def test_kernel_probes_say_this_kernel_has_none(test_objects):
    r = run_load(test_objects("kprobes_more"), "--json")
    assert r.returncode == 1
    progs = by_name(json.loads(r.stdout)["programs"])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    for name, p in progs.items():
        assert p["loaded"] and not p["attached"]
        assert p["error"] == (f"this kernel has no kprobes (no kprobe PMU: CONFIG_KPROBES is off), so no loader "
                              f"can attach {p['section']}; use a tracepoint (tp/, tp_btf/) instead")
    assert "Traceback" not in r.stderr


def test_lsm_needs_a_trampoline_and_says_so(test_objects):
    r = run_load(test_objects("lsm_hook"))
    assert r.returncode == 1
    assert "this kernel refuses fentry/fexit/lsm programs even to root" in r.stderr
    assert "needs root" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_nothing_stays_attached_after_any_exit(test_objects, sig, status):
    with Running(test_objects("uprobes"), "--json") as run:
        ids = run.wait_attached(2)  # on_getppid and on_main, each a perf link on a uprobe
        assert run.stop(sig) == status
    for link_id in ids["link"]:
        wait_gone(syscall.link_get_fd_by_id, link_id)
    for prog_id in ids["prog"]:
        wait_gone(syscall.prog_get_fd_by_id, prog_id)
