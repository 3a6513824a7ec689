"""cgroup paths to containers, pods and services, named from runtime state on disk."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ebpf_energy.containers import Owner, Resolver, identify

ROOT = Path(__file__).resolve().parent.parent
A = "a" * 64
B = "b" * 64
UID = "1f2e3d4c-5b6a-4798-8a9b-0c1d2e3f4a5b"
U_ = UID.replace("-", "_")

CASES = [
    ("/system.slice/nginx.service", Owner(service="nginx.service")),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service", Owner(service="foo.service", user="1000")),
    ("/user.slice/user-1000.slice/session-3.scope", Owner(service="session-3.scope")),
    (f"/system.slice/docker-{A}.scope", Owner("docker", A)),
    (f"/docker/{A}", Owner("docker", A)),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/cri-containerd-{A}.scope",
     Owner("containerd", A, UID, "burstable")),
    (f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{A}.scope", Owner("containerd", A, UID, "guaranteed")),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/crio-{B}.scope",
     Owner("cri-o", B, UID, "besteffort")),
    (f"/kubepods/burstable/pod{UID}/{A}", Owner("containerd", A, UID, "burstable")),
    (f"/kubepods/pod{UID}/{A}", Owner("containerd", A, UID, "guaranteed")),
    (f"/machine.slice/libpod-{A}.scope", Owner("podman", A)),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{A}.scope", Owner("podman", A, user="1000")),
    # the same layouts below another cgroup: a kubelet --cgroup-root, a test's own cgroup
    (f"/ebpf-energy-test-1/kubepods/besteffort/pod{UID}/{B}", Owner("containerd", B, UID, "besteffort")),
    (f"/ebpf-energy-test-1/docker/{A}", Owner("docker", A)),
    # Kubernetes in Docker (kind): the pod's container wins over the node's, and the node is not the pod's
    (f"/system.slice/docker-{A}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
     f"kubelet-kubepods-burstable-pod{U_}.slice/cri-containerd-{B}.scope", Owner("containerd", B, UID, "burstable")),
    (f"/docker/{A}/kubelet/kubepods/burstable/pod{UID}/{B}", Owner("containerd", B, UID, "burstable")),
    (f"/docker/{A}/kubelet/kubepods/burstable/pod{UID}", Owner("", "", UID, "burstable")),
    (f"/kubepods/burstable/pod{UID}", Owner("", "", UID, "burstable")),
    (f"/system.slice/crio-conmon-{B}.scope", Owner("cri-o", B)),
    ("/docker/not-an-id", Owner()),
    ("/", Owner()),
    (None, Owner()),
]


@pytest.mark.parametrize("path, owner", CASES, ids=[str(c[0]) for c in CASES])
def test_every_runtime_and_driver_is_recognised(path, owner):
    assert identify(path) == owner


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def runtime_tree(root: Path):
    """State files as containerd, CRI-O and Docker leave them, under ``root`` laid out like /."""
    write(root / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / A / "config.json",
          {"annotations": {"io.kubernetes.cri.container-name": "web", "io.kubernetes.cri.sandbox-name": "shop-7d9",
                           "io.kubernetes.cri.sandbox-namespace": "prod"}})
    write(root / "run/containers/storage/overlay-containers" / B / "userdata/config.json",
          {"annotations": {"io.kubernetes.container.name": "db", "io.kubernetes.pod.name": "shop-db-0",
                           "io.kubernetes.pod.namespace": "prod"}})
    c = "c" * 64
    write(root / "var/lib/docker/containers" / c / "config.v2.json", {"Name": "/cache-1"})
    return c


def test_names_come_from_the_runtimes_state_and_unknown_ids_stay_ids(tmp_path):
    c = runtime_tree(tmp_path)
    r = Resolver(str(tmp_path))
    n = r.names(Owner("containerd", A, UID))
    assert (n.container, n.pod, n.namespace) == ("web", "shop-7d9", "prod")
    n = r.names(Owner("cri-o", B, UID))
    assert (n.container, n.pod, n.namespace) == ("db", "shop-db-0", "prod")
    assert r.names(Owner("docker", c)).container == "cache-1"
    assert r.names(Owner("docker", "d" * 64)).container == ""  # unknown: stays an id
    # Podman: an OCI config with no name in it; containers/storage's record names it
    e = "e" * 64
    store = tmp_path / "var/lib/containers/storage/overlay-containers"
    write(store / e / "userdata/config.json", {"annotations": {"io.container.manager": "libpod"}})
    write(store / "containers.json", [{"id": e, "names": ["nightly-backup"], "layer": "x"}, {"id": A}])
    assert r.names(Owner("podman", e)).container == "nightly-backup"
    # rootless Podman: the store in the home of the user whose manager runs it
    home = tmp_path / "home/ada/.local/share/containers/storage/overlay-containers"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nada:x:1000:1000::/home/ada:/bin/sh\n")
    write(home / G / "userdata/config.json", {"annotations": {}})
    write(home / "containers.json", [{"id": G, "names": ["notebook"]}])
    assert r.names(Owner("podman", G, user="1000")).container == "notebook"
    assert r.names(Owner("podman", "9" * 64, user="1001")).container == ""  # no such user: stays an id
    assert r.names(Owner()).container == ""


@pytest.fixture
def own_cgroup_dir():
    """A cgroup of this test's own under the v2 mount; it and all below it removed after."""
    from ebpf_energy.cgroups import cgroup2_mount

    mount = cgroup2_mount()
    base = Path(mount) / f"ebpf-energy-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    base.mkdir()
    yield mount, base
    for _ in range(100):
        left = [Path(d) for d, _, _ in os.walk(base, topdown=False)]
        for d in left:
            for pid in (d / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            try:
                d.rmdir()
            except OSError:
                pass
        if not base.exists():
            return
        time.sleep(0.02)


# half a CPU until killed: seen by every monitor run of the test, however slow the machine
BURN = ("import time\nwhile True:\n"
        "    t = time.thread_time()\n    while time.thread_time() - t < 0.05: pass\n    time.sleep(0.05)")


UID2 = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c5d"
D, E, F, G = "d" * 64, "e" * 64, "f" * 64, "0123456789ab" * 5 + "cdef"
# every runtime and driver: (cgroup under the test's own, container name, runtime, pod, namespace, unit)
ON_THE_KERNEL = [
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice/cri-containerd-{A}.scope",
     "web", "containerd", "shop-7d9", "prod", ""),
    (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID2.replace('-', '_')}.slice/crio-{B}.scope",
     "db", "cri-o", "shop-db-0", "prod", ""),
    (f"kubepods/burstable/pod{U_.replace('_', '-')}/{E}", "", "containerd", "shop-7d9", "prod", ""),
    ("system.slice/docker-{c}.scope", "cache-1", "docker", "", "", ""),
    (f"docker/{D}", "queue", "docker", "", "", ""),
    (f"machine.slice/libpod-{F}.scope", "nightly-backup", "podman", "", "", ""),
    (f"user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{G}.scope", "notebook", "podman", "", "", ""),
    ("system.slice/ebpf-energy-demo.service", "", "", "", "", "ebpf-energy-demo.service"),
]
LIGHT_BURN = ("import time\nwhile True:\n"
              "    t = time.thread_time()\n    while time.thread_time() - t < 0.01: pass\n    time.sleep(0.09)")


@pytest.mark.kernel
def test_monitor_by_container_pod_and_service_on_the_real_kernel(own_cgroup_dir, tmp_path):
    """A burner in a cgroup named as each runtime and driver names them
    (under this test's own cgroup): each has its row, named from the runtime
    tree (rootless Podman's from its user's home; the cgroupfs container
    with no state of its own stays an id, in its pod), and every view adds up
    to the process view exactly."""
    mount, base = own_cgroup_dir
    c = runtime_tree(tmp_path)
    write(tmp_path / "var/lib/docker/containers" / D / "config.v2.json", {"Name": "/queue"})
    store = tmp_path / "var/lib/containers/storage/overlay-containers"
    write(store / F / "userdata/config.json", {"annotations": {"io.container.manager": "libpod"}})
    write(store / "containers.json", [{"id": F, "names": ["nightly-backup"]}])
    rootless = tmp_path / "home/ada/.local/share/containers/storage/overlay-containers"
    write(rootless / G / "userdata/config.json", {"annotations": {}})
    write(rootless / "containers.json", [{"id": G, "names": ["notebook"]}])
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("ada:x:1000:1000::/home/ada:/bin/sh\n")
    cases = [(base / path.format(c=c), *rest) for path, *rest in ON_THE_KERNEL]
    for d, *_ in cases:
        d.mkdir(parents=True)
    kids = []
    try:
        for d, *_ in cases:
            kids.append(subprocess.Popen([sys.executable, "-c", LIGHT_BURN],
                                         preexec_fn=lambda d=d: (d / "cgroup.procs").write_text("0")))
        time.sleep(0.2)
        out = {}
        for by in ("container", "pod", "service", "process"):
            r = subprocess.run([sys.executable, "-m", "ebpf_energy", "monitor", "-d", "1", "-p", "10", "--json",
                                "--by", by, "--runtime-root", str(tmp_path)], capture_output=True, text=True,
                               cwd=ROOT, timeout=60)
            assert r.returncode == 0, r.stderr
            out[by] = json.loads(r.stdout)
    finally:
        for k in kids:
            k.kill()
            k.wait()
    rows = {g["container_id"]: g for g in out["container"]["containers"]}
    for (d, name, runtime, pod, ns, unit), cid in zip(cases, [A, B, E, c, D, F, G, ""]):
        if not cid:
            continue
        g = rows[cid[:12]]
        assert (g["container"], g["runtime"], g["pod"], g["namespace"]) == (name, runtime, pod, ns), d
        assert g["processes"] == 1 and g["cpu_ns"] > 0, d
    pods = {g["pod_uid"]: g for g in out["pod"]["pods"]}
    assert (pods[UID]["pod"], pods[UID]["qos"], pods[UID]["processes"]) == ("shop-7d9", "burstable", 2)
    assert (pods[UID2]["pod"], pods[UID2]["namespace"], pods[UID2]["qos"]) == ("shop-db-0", "prod", "besteffort")
    units = {g["service"]: g for g in out["service"]["services"]}
    assert units["ebpf-energy-demo.service"]["processes"] == 1 and units["ebpf-energy-demo.service"]["cpu_ns"] > 0
    for by in ("container", "pod", "service"):
        report = out[by]
        assert sum(g["cpu_ns"] for g in report[by + "s"]) == report["total_cpu_ns"], by
        assert sum(g["processes"] for g in report[by + "s"]) == len(report["processes"]), by
        assert sum(g["energy_j"] for g in report[by + "s"]) == pytest.approx(
            report["total_energy_j"] - report["idle_energy_j"]), by


# a command that makes a Docker-named cgroup under its own, runs a burner in it and burns a little itself
IN_CONTAINER = r"""
import os, subprocess, sys, time
mount, cid = sys.argv[1], sys.argv[2]
spin_s = sys.argv[3] if len(sys.argv) > 3 else "0.05"
mine = open("/proc/self/cgroup").read().split("0::", 1)[1].split("\n")[0]
d = os.path.join(mount + mine, f"docker-{cid}.scope")
os.mkdir(d)
spin = "import time\nt = time.thread_time() + " + spin_s + "\nwhile time.thread_time() < t: pass"
subprocess.run([sys.executable, "-c", spin], preexec_fn=lambda: open(d + "/cgroup.procs", "w").write("0"), check=True)
t = time.thread_time() + 0.02
while time.thread_time() < t: pass
"""


@pytest.mark.kernel
def test_run_by_container_breaks_the_tree_down_and_adds_up(tmp_path):
    from ebpf_energy.cgroups import cgroup2_mount

    c = runtime_tree(tmp_path)
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "run", "--json", "-p", "10", "--by", "container",
                        "--runtime-root", str(tmp_path), "--", sys.executable, "-c", IN_CONTAINER,
                        cgroup2_mount(), c], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {g["container"]: g for g in out["containers"]}
    assert set(rows) == {"cache-1", ""} and rows["cache-1"]["container_id"] == c[:12]
    assert rows["cache-1"]["runtime"] == "docker" and rows["cache-1"]["processes"] == 1
    assert rows["cache-1"]["cpu_ns"] >= 50_000_000 and rows[""]["cpu_ns"] >= 20_000_000
    assert sum(g["cpu_ns"] for g in out["containers"]) == out["cpu_ns"]
    assert sum(g["processes"] for g in out["containers"]) == out["processes"]
    assert sum(g["energy_j"] for g in out["containers"]) == pytest.approx(out["energy_j"], rel=1e-12)
    text = subprocess.run([sys.executable, "-m", "ebpf_energy", "run", "-p", "10", "--by", "container",
                           "--runtime-root", str(tmp_path), "--", sys.executable, "-c", IN_CONTAINER,
                           cgroup2_mount(), c], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "by container:" in text.stderr and f"{c[:12]}  cache-1" in text.stderr


@pytest.mark.kernel
def test_compare_by_container_shows_both_monitors_rows(tmp_path):
    import shlex

    from ebpf_energy.cgroups import cgroup2_mount

    c = runtime_tree(tmp_path)
    script = tmp_path / "in_container.py"
    script.write_text(IN_CONTAINER)
    cmd = shlex.join([sys.executable, str(script), cgroup2_mount(), c, "0.3"])
    r = subprocess.run([sys.executable, "-m", "ebpf_energy", "compare", "-d", "60", "-w", cmd, "--json", "-p", "10",
                        "--by", "container", "--runtime-root", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for name in ("ebpf", "traditional"):
        rows = out["monitors"][name]["containers"]
        assert len(rows) <= 10 + 1
        assert sum(g["cpu_ns"] for g in rows) == out["monitors"][name]["total_cpu_ns"], name
    # /proc reads a process's cgroup at its first two samples (test_procfs:
    # moved just after its fork); on a loaded machine the burner may still not
    # have run its move by then, so only the eBPF side (the cgroup at every
    # switch) is held to the container row here
    mine = [g for g in out["monitors"]["ebpf"]["containers"] if g["container"] == "cache-1"]
    assert len(mine) == 1 and mine[0]["container_id"] == c[:12]
    ebpf = next(g for g in out["monitors"]["ebpf"]["containers"] if g["container"] == "cache-1")
    assert ebpf["cpu_ns"] >= 300_000_000  # its 0.3 s of thread time
    from ebpf_energy.compare import render

    text = render(out)
    assert "CPU (ms) by container" in text and f"{c[:12]} cache-1" in text
