"""What owns a cgroup: a systemd unit, a Docker/Podman container, a Kubernetes pod.

Read from the cgroup v2 path alone (table-driven: systemd's and cgroupfs'
layouts of each runtime), then named from the runtime's own state on disk,
never from a daemon: the OCI bundle's ``config.json`` annotations for
containerd and CRI-O (pod, namespace, container), Docker's
``containers/<id>/config.v2.json``, Podman's ``userdata/config.json``.
``runtime_root`` (``--runtime-root``, env ``EBPF_ENERGY_RUNTIME_ROOT``) is
where those files are looked for, laid out like ``/``: tests build such trees.
An id whose files are not there stays an id.
"""

import json
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Optional

ENV_ROOT = "EBPF_ENERGY_RUNTIME_ROOT"
_CACHE_MAX = 65536
ID = r"(?P<id>[0-9a-f]{64})"


@dataclass(frozen=True)
class Owner:
    """Who a cgroup belongs to; empty strings where it says nothing."""

    runtime: str = ""  # docker, containerd, cri-o, podman
    container_id: str = ""  # full id (reports show 12 characters)
    pod_uid: str = ""
    qos: str = ""  # guaranteed, burstable, besteffort
    service: str = ""  # a systemd unit: nginx.service, session-3.scope, user@1000.service
    user: str = ""  # the uid whose systemd user manager (user@UID.service) it runs under: rootless Podman's


# (runtime, pattern on one path component); tried on every component, deepest wins for the container
_CONTAINER = [
    ("docker", re.compile(rf"^docker-{ID}\.scope$")),
    ("containerd", re.compile(rf"^cri-containerd-{ID}\.scope$")),
    ("cri-o", re.compile(rf"^crio-(?:conmon-)?{ID}\.scope$")),
    ("podman", re.compile(rf"^libpod-(?:conmon-)?{ID}(?:\.scope)?$")),
]
# the systemd driver's pod slice, also under a kubelet --cgroup-root (kind: kubelet-kubepods-...)
_POD_SYSTEMD = re.compile(r"^(?:\w+-)?kubepods(?:-(?P<qos>besteffort|burstable))?-pod(?P<uid>[0-9a-f_]{36})\.slice$")
_POD_DIR = re.compile(r"^pod(?P<uid>[0-9a-f-]{36})$")  # the cgroupfs driver's pod directory
_BARE_ID = re.compile(r"^[0-9a-f]{64}$")
_QOS = ("besteffort", "burstable")
_SERVICE = re.compile(r"^(?!docker-|cri-containerd-|crio-|libpod-)(?P<unit>[^/]+\.(?:service|scope))$")
_USER_MANAGER = re.compile(r"^user@(?P<uid>\d+)\.service$")


def identify(path: Optional[str]) -> Owner:
    """The owner of a cgroup v2 path (relative to the v2 mount).

    Read component by component, so the layouts match wherever they sit (a
    kubelet ``--cgroup-root``, a test's own cgroup, Kubernetes in Docker);
    the deepest container and pod win, and a container above the pod (kind's
    node) is not the pod's.
    """
    if not path:
        return Owner()
    runtime = cid = uid = qos = service = user = ""
    c_at = p_at = -1
    parts = path.strip("/").split("/")
    for i, part in enumerate(parts):
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        for rt, pat in _CONTAINER:
            m = pat.match(part)
            if m:
                runtime, cid, c_at = rt, m.group("id"), i
        if part == "docker" and _BARE_ID.match(nxt):  # Docker's cgroupfs driver: /docker/<id>
            runtime, cid, c_at = "docker", nxt, i + 1
        m = _POD_SYSTEMD.match(part)
        if m:
            uid, qos, p_at = m.group("uid").replace("_", "-"), m.group("qos") or "guaranteed", i
        if part == "kubepods":  # the cgroupfs driver: /kubepods[/<qos>]/pod<uid>[/<id>]
            j = i + 1 + (nxt in _QOS)
            m = _POD_DIR.match(parts[j]) if j < len(parts) else None
            if m:
                uid, qos, p_at = m.group("uid"), nxt if nxt in _QOS else "guaranteed", j
                if j + 1 < len(parts) and _BARE_ID.match(parts[j + 1]):
                    runtime, cid, c_at = "containerd", parts[j + 1], j + 1  # names no runtime: CRI's
        m = _SERVICE.match(part)
        if m:
            service = m.group("unit")  # the deepest unit
        m = _USER_MANAGER.match(part)
        if m:
            user = m.group("uid")
    if cid and c_at < p_at:  # the pod runs inside that container (a kind node): not the pod's own
        runtime = cid = ""
    if cid:
        service = ""  # a container's owner is the container, not the unit it runs under
    return Owner(runtime, cid, uid, qos, service, user)


# Where each runtime leaves a container's state, relative to the runtime root
# (deploy/daemonset.yaml mounts each read-only; a test holds them together):
# the OCI bundle's config.json of containerd (Kubernetes' k8s.io namespace and
# Docker's moby), then CRI-O's and Podman's userdata (run and lib stores)
OCI_STATE = (("run/containerd/io.containerd.runtime.v2.task/k8s.io", "config.json"),
             ("run/containerd/io.containerd.runtime.v2.task/moby", "config.json"),
             ("var/lib/containers/storage/overlay-containers", "userdata/config.json"),
             ("run/containers/storage/overlay-containers", "userdata/config.json"))
DOCKER_STATE = "var/lib/docker/containers"  # <id>/config.v2.json: the container's name
# containers/storage's record of every container (Podman's names: its OCI config carries none)
STORAGE_NAMES = "var/lib/containers/storage/overlay-containers/containers.json"
# rootless Podman keeps the same store in its user's home (found in the root's etc/passwd)
ROOTLESS_STORE = ".local/share/containers/storage/overlay-containers"
STATE_DIRS = tuple(d for d, _ in OCI_STATE) + (DOCKER_STATE,)


@dataclass
class Names:
    container: str = ""
    pod: str = ""
    namespace: str = ""


def _annotations(path):
    try:
        with open(path) as f:
            return (json.load(f).get("annotations") or {})
    except (OSError, ValueError, AttributeError):
        return None


def _first(ann, *keys):
    return next((ann[k] for k in keys if ann.get(k)), "")


@dataclass
class Resolver:
    """Container names from the runtimes' state under ``root``; cached per id."""

    root: str = "/"
    _cache: Dict[str, Names] = field(default_factory=dict)
    # pod uid -> its names, from whichever of its containers had them: a
    # container whose own state is missing (or the pause sandbox) still gets its pod
    pods: Dict[str, Names] = field(default_factory=dict)
    _storage: Dict[str, tuple] = field(default_factory=dict)  # containers.json -> (mtime, {id: first name})

    @classmethod
    def from_env(cls, root: Optional[str] = None) -> "Resolver":
        return cls(root or os.environ.get(ENV_ROOT) or "/")

    def _p(self, *parts):
        return os.path.join(self.root, *parts)

    def names(self, owner: Owner) -> Names:
        cid = owner.container_id
        if not cid:
            return Names()
        got = self._cache.get(cid)
        if got is None:
            if len(self._cache) >= _CACHE_MAX:  # a long run sees containers come and go
                self._cache.clear()
            got = self._cache[cid] = self._lookup(owner)
            if owner.pod_uid and got.pod:
                self.pods.setdefault(owner.pod_uid, Names(pod=got.pod, namespace=got.namespace))
        if owner.pod_uid and not got.pod and owner.pod_uid in self.pods:
            pod = self.pods[owner.pod_uid]
            return Names(container=got.container, pod=pod.pod, namespace=pod.namespace)
        return got

    def _lookup(self, owner: Owner) -> Names:
        cid = owner.container_id
        stores = [(self._p(d, cid, f), self._p(STORAGE_NAMES)) for d, f in OCI_STATE]
        home = self._home(owner.user) if owner.runtime == "podman" and owner.user else None
        if home:
            store = os.path.join(self.root, home.lstrip("/"), ROOTLESS_STORE)
            stores.insert(0, (os.path.join(store, cid, "userdata/config.json"), os.path.join(store, "containers.json")))
        for path, names_file in stores:
            ann = _annotations(path)
            if ann is None:
                continue
            return Names(
                container=_first(ann, "io.kubernetes.container.name", "io.kubernetes.cri.container-name")
                or self._storage_name(cid, names_file),
                pod=_first(ann, "io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"),
                namespace=_first(ann, "io.kubernetes.pod.namespace", "io.kubernetes.cri.sandbox-namespace"))
        try:
            with open(self._p(DOCKER_STATE, cid, "config.v2.json")) as f:
                name = json.load(f).get("Name", "")
            return Names(container=name.lstrip("/"))
        except (OSError, ValueError, AttributeError):
            return Names()

    def _storage_name(self, cid: str, path: str) -> str:
        """The name containers/storage's ``path`` records for ``cid`` (read again when the file changes)."""
        try:
            mtime = os.stat(path).st_mtime_ns
            if mtime != self._storage.get(path, (None,))[0]:
                with open(path) as f:
                    records = json.load(f)
                self._storage[path] = (mtime, {r["id"]: (r.get("names") or [""])[0] for r in records
                                               if isinstance(r, dict) and "id" in r})
        except (OSError, ValueError, TypeError, AttributeError):
            return ""
        return self._storage[path][1].get(cid, "")

    def _home(self, uid: str) -> Optional[str]:
        """A user's home directory from the root's ``etc/passwd``."""
        try:
            with open(self._p("etc/passwd")) as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) >= 6 and fields[2] == uid:
                        return fields[5]
        except OSError:
            pass
        return None


VIEWS = ("container", "pod", "service")
# the Prometheus labels of each view's series (the JSON rows carry more: runtime, pod_uid, qos)
LABELS = {"container": ("container_id", "container", "pod", "namespace"),
          "pod": ("pod", "namespace"),
          "service": ("service",)}


def group_of(cgroup: Optional[str], by: str, resolver: Resolver):
    """(key, fields) of the row a process in ``cgroup`` belongs to in view ``by``.

    The key tells rows apart (a container's full id, a pod's uid, a unit);
    processes with no owner of that kind share the key ``""`` and fields with
    empty names, so every process is in exactly one row.
    """
    o = identify(cgroup)
    n = resolver.names(o)
    if by == "container":
        return o.container_id, {"container_id": o.container_id[:12], "container": n.container,
                                "runtime": o.runtime, "pod": n.pod, "namespace": n.namespace, "pod_uid": o.pod_uid}
    if by == "pod":
        return o.pod_uid, {"pod": n.pod, "namespace": n.namespace, "pod_uid": o.pod_uid, "qos": o.qos}
    if by == "service":
        return o.service, {"service": o.service}
    raise ValueError(f"no such view {by!r}: one of {', '.join(VIEWS)}")


def pod_named(fields: dict) -> bool:
    """False while a pod's name is still unknown (it may come from another of its containers)."""
    return not fields.get("pod_uid") or bool(fields.get("pod"))


def series_labels(fields: dict, by: str) -> tuple:
    """The label values of a row's series. A pod whose name is unknown is
    labelled by its uid, so two unnamed pods never share a series."""
    if by == "pod" and not fields["pod"]:
        fields = dict(fields, pod=fields["pod_uid"])
    return tuple(fields[k] for k in LABELS[by])
