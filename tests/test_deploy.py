"""deploy/: the container image build file and the Kubernetes DaemonSet, parsed
and cross-checked with the code (every mount, path, port and flag). No
network, nothing built or pulled."""

import os
import shlex
from pathlib import Path

import click
import pytest
import yaml

from ebpf_energy.cgroups import cgroup2_mount
from ebpf_energy.commands.exporter import exporter
from ebpf_energy.containers import ENV_ROOT, STATE_DIRS
from ebpf_energy.exporter import DEFAULT_LISTEN, ExporterError, parse_listen
from ebpf_energy.loader.bpffs import BPFFS_PATH
from ebpf_energy.loader.kernel_btf import DEFAULT_PATH as BTF_PATH
from ebpf_energy.privilege import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, can_bpf
from ebpf_energy.rapl.meter import DEFAULT_POWERCAP_ROOT

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CAPS = {"BPF": CAP_BPF, "PERFMON": CAP_PERFMON, "SYS_ADMIN": CAP_SYS_ADMIN}


def dockerfile():
    """[(INSTRUCTION, argument text)], continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def exec_form(text):
    return yaml.safe_load(text)  # a JSON array: the exec form


def daemonset():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["DaemonSet"]
    return docs[0]


def exporter_args(args):
    """Parse ``args`` with the exporter command itself: an unknown flag or a bad value fails here."""
    assert args[0] == "exporter"
    ctx = exporter.make_context("exporter", list(args[1:]), resilient_parsing=False)
    return ctx.params


def test_the_image_installs_the_package_and_runs_the_exporter():
    ins = dockerfile()
    kinds = [k for k, _ in ins]
    assert kinds[0] == "FROM" and ins[0][1].startswith("python:3")
    for k, arg in ins:
        if k == "COPY":
            for src in shlex.split(arg)[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    pyproject = (ROOT / "pyproject.toml").read_text()
    run = " ".join(a for k, a in ins if k == "RUN")
    assert '".[exporter]"' in run and "exporter = [" in pyproject
    assert "bpf/*.bpf.o" in pyproject and list((ROOT / "ebpf_energy/bpf").glob("*.bpf.o")), \
        "the image builds nothing: the BPF object must ship in the package"
    entry = exec_form(dict(ins)["ENTRYPOINT"])
    assert entry == ["ebpf-energy"] and 'ebpf-energy = "ebpf_energy.entry:main"' in pyproject
    params = exporter_args(exec_form(dict(ins)["CMD"]))
    port = parse_listen(params["listen"])[1]
    assert parse_listen(params["listen"])[0] == "0.0.0.0"  # reachable from outside the container
    assert dict(ins)["EXPOSE"] == str(port) == DEFAULT_LISTEN.rsplit(":", 1)[1]
    env = dict(a.split("=", 1) for k, a in ins if k == "ENV")
    assert env == {ENV_ROOT: "/host"}


def test_the_daemonset_has_what_the_exporter_needs():
    ds = daemonset()
    pod = ds["spec"]["template"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    assert spec["hostPID"] is True  # /proc shows the node's processes
    (c,) = spec["containers"]
    sc = c["securityContext"]
    added = sc.get("capabilities", {}).get("add", [])
    mask = sum(1 << CAPS[name.removeprefix("CAP_")] for name in added)
    assert sc.get("privileged") is True or can_bpf(mask), "neither privileged nor CAP_BPF + CAP_PERFMON"
    assert sc.get("runAsUser") == 0  # the runtimes' state and RAPL counters are root's

    # the command line: flags the exporter takes, its port served, announced and probed
    image_cmd = exec_form(dict(dockerfile())["CMD"])
    args = c.get("args", image_cmd)
    params = exporter_args(args)
    host, port = parse_listen(params["listen"])
    assert host == "0.0.0.0" and params["by"] in ("container", "pod", "service")
    (p,) = c["ports"]
    assert p["containerPort"] == port and p.get("protocol", "TCP") == "TCP"
    ann = pod["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(port)
    assert ann["prometheus.io/path"] == c["readinessProbe"]["httpGet"]["path"] == "/metrics"
    assert c["readinessProbe"]["httpGet"]["port"] in (p["name"], port)

    # every mount: a volume, at the path the code reads
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert len(mounts) == len(c["volumeMounts"]) and {m["name"] for m in mounts.values()} == set(vols)
    host_of = {path: vols[m["name"]]["hostPath"]["path"] for path, m in mounts.items()}
    system = {BPFFS_PATH, os.path.dirname(BTF_PATH), DEFAULT_POWERCAP_ROOT, "/sys/fs/cgroup"}
    for path in system:
        assert path in mounts and host_of[path] == path, f"{path}: not mounted from the node's {path}"
    mount = cgroup2_mount()
    assert mount and (mount + "/").startswith("/sys/fs/cgroup/"), "the v2 mount is not under /sys/fs/cgroup"
    for path in system - {BPFFS_PATH}:
        assert mounts[path].get("readOnly") is True, f"{path} should be read-only"

    # the runtimes' state: every directory the name lookups read, read-only under the runtime root
    env = {e["name"]: e["value"] for e in c.get("env", [])}
    root = env.get(ENV_ROOT, dict(a.split("=", 1) for k, a in dockerfile() if k == "ENV").get(ENV_ROOT))
    assert root == "/host"
    state = {path: m for path, m in mounts.items() if path.startswith(root + "/")}
    for d in STATE_DIRS:
        inside = os.path.join(root, d)
        covering = [path for path in state if (inside + "/").startswith(path + "/")]
        assert covering, f"{d}: the runtime state is not mounted"
        (path,) = covering
        assert state[path].get("readOnly") is True
        assert host_of[path] == "/" + os.path.relpath(path, root), f"{path} is not the node's own"
    for path in state:
        assert any((os.path.join(root, d) + "/").startswith(path + "/") for d in STATE_DIRS), \
            f"{path}: mounted, but no lookup reads it"
    assert set(mounts) == system | set(state), "a mount the code does not use"


@pytest.mark.parametrize("bad", [["exporter", "--by", "cluster"], ["exporter", "--listen", "nowhere"]])
def test_the_cross_check_would_catch_a_wrong_flag(bad):
    with pytest.raises((click.UsageError, ExporterError)):
        params = exporter_args(bad)
        parse_listen(params["listen"])
