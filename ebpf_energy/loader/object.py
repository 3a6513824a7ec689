"""``BpfObject``: the façade over the three phases, owning every fd it makes.

    spec = ObjectSpec.parse(path)         # 1. pure: what the ELF declares   (spec.py)
    prepared = prepare(spec, target)      # 2. pure: finished programs       (prepare.py)
    collection = Collection.load(prepared)  # 3. fds: BTF, maps, programs    (collection.py)
    link.auto.attach(obj, program)        # 4. links, one module per kind    (link/)

``BpfObject.open(path)`` runs them in that order on an editable copy of the
spec (globals, sizes, which programs load), attaches, and closes in reverse.
"""

from __future__ import annotations

from collections.abc import Iterable

from ebpf_energy.loader import explain, program, syscall
from ebpf_energy.loader.collection import Collection, TrampolineRefused  # noqa: F401 (re-exported)
from ebpf_energy.loader.errors import AttachError, LoaderError
from ebpf_energy.loader.globals import GlobalData
from ebpf_energy.loader.maps import Map
from ebpf_energy.loader.prepare import prepare
from ebpf_energy.loader.spec import MAP_TYPES, ObjectSpec
from ebpf_energy.loader.target import Target


class Program:
    """A program of the object: its spec, then its fd and link."""

    def __init__(self, spec):
        self.spec = spec
        self.fd: int | None = None
        self.link = None
        self.prepared = None  # its PreparedProgram, once loaded
        self.attach_error: str | None = None
        self.via: str | None = None  # a struct_ops program: the registered map it is attached through
        self.needs: str | None = None  # what it needs to attach beyond its section name (loaded, not attached)

    name = property(lambda self: self.spec.name)
    section = property(lambda self: self.spec.section)
    type_name = property(lambda self: self.spec.type_name)

    @property
    def autoload(self):
        return self.spec.autoload

    @autoload.setter
    def autoload(self, value):
        self.spec.autoload = bool(value)

    @property
    def loaded(self):
        return self.fd is not None

    @property
    def attached(self):
        return self.link is not None or self.via is not None

    def info(self) -> dict:
        program.check_loaded(self.name, self.fd)
        return syscall.obj_get_info(self.fd, "prog")

    def test_run(self, **kw) -> dict:
        """Run the program once in the kernel (BPF_PROG_TEST_RUN; keywords as
        :func:`syscall.prog_test_run`): retval, duration_ns, data_out, ctx_out."""
        program.check_loaded(self.name, self.fd)
        return syscall.prog_test_run(self.fd, **kw)


class BpfObject:
    """One BPF ELF object in the kernel. Use as a context manager."""

    def __init__(self, spec: ObjectSpec):
        self.spec = spec.copy()  # edits (globals, sizes) never reach the caller's spec
        spec = self.spec
        self.programs: dict[str, Program] = {name: Program(p) for name, p in spec.programs.items()}
        self.maps: dict[str, Map] = {}
        self.collection: Collection | None = None
        self.prepared = None
        self._globals: dict[str, GlobalData] = {}
        for sec, variables in spec.data_vars.items():
            self._globals[sec] = GlobalData(sec, variables, spec.btf, spec.maps[sec].initial)
        self.struct_ops_links: dict[str, object] = {}  # struct_ops map name -> its registration
        self.warnings: list[str] = []  # loaded, but not as asked (a BTF the kernel refused)
        self._loaded = False
        self._closed = False

    @classmethod
    def open(cls, path, data: bytes | None = None) -> "BpfObject":
        return cls(ObjectSpec.parse(str(path), data))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- before load ---------------------------------------------------------
    def globals(self, section: str) -> GlobalData:
        try:
            return self._globals[section]
        except KeyError:
            raise KeyError(f"{self.spec.path} has no global data section {section!r} "
                           f"(it has: {', '.join(self._globals) or 'none'})") from None

    rodata = property(lambda self: self.globals(".rodata"))
    bss = property(lambda self: self.globals(".bss"))
    data = property(lambda self: self.globals(".data"))

    def set_global(self, name: str, value):
        """Set a global variable by name, whichever data section holds it."""
        for g in self._globals.values():
            if name in g:
                g[name] = value
                return g.section
        raise KeyError(f"no global variable {name!r} in {self.spec.path}")

    def find_global(self, name: str) -> GlobalData:
        """The data section (``.bss``, ``.rodata``, ``.kconfig``...) holding global ``name``."""
        for g in self._globals.values():
            if name in g:
                return g
        raise KeyError(f"no global variable {name!r} in {self.spec.path}")

    def set_max_entries(self, map_name: str, n: int):
        if self._loaded:
            raise LoaderError("max_entries can only change before load()")
        try:
            spec = self.spec.maps[map_name]
        except KeyError:
            raise KeyError(f"no map {map_name!r} (maps: {', '.join(self.spec.maps)})") from None
        if spec.origin != "btf":
            what = "a global data section" if spec.origin in ("data", "kconfig") else f"a {spec.type_name} map"
            raise LoaderError(f"{map_name} is {what}: its size is fixed")
        if n <= 0:
            raise LoaderError(f"max_entries of {map_name} must be positive, got {n}")
        spec.max_entries = int(n)

    def has_globals(self, section: str) -> bool:
        return section in self._globals

    @property
    def btf_fd(self) -> int:
        return self.collection.btf_fd if self.collection is not None else 0

    # -- load ----------------------------------------------------------------
    def load(self, only: Iterable[str] | None = None, target: Target | None = None):
        """Prepare for ``target`` (the running kernel) and create the fds: all
        programs with autoload, or ``only`` these."""
        if self._loaded:
            raise LoaderError("object already loaded")
        only = list(only) if only is not None else None
        prepared = prepare(self.spec, target or Target.running(), only=only)
        if only is not None:
            for name, p in self.programs.items():
                p.autoload = name in only
        self.prepared = prepared
        try:
            self.collection = Collection.load(prepared)
        except BaseException:
            self.close()
            raise
        self.maps = dict(self.collection.maps)
        self.warnings = list(self.collection.warnings)
        for name, fd in self.collection.programs.items():
            self.programs[name].fd = fd
            self.programs[name].prepared = prepared.programs[name]
        for name, g in self._globals.items():
            if name in self.maps:
                g.attach_map(self.maps[name], frozen=prepared.maps[name].freeze)
        self._loaded = True
        return self

    # -- attach ----------------------------------------------------------------
    def attach(self, only: Iterable[str] | None = None, strict=True) -> list[Program]:
        """Attach loaded programs from their section names (:mod:`link.auto`);
        with ``strict`` the first failure raises (after recording it), else
        failures are kept in ``program.attach_error``. A program whose section
        names no complete target (a socket filter, an xdp program) stays
        loaded, not attached, with ``program.needs`` saying what it needs."""
        from ebpf_energy.loader.link import auto

        done = []
        names = set(only) if only is not None else None
        for p in self.programs.values():
            if not p.loaded or p.attached or (names is not None and p.name not in names):
                continue
            try:
                p.link = auto.attach(self, p)
                done.append(p)
            except auto.NeedsMore as e:
                p.needs = str(e)
                explain.trace("attach", f"{p.name}: section {p.section!r}: loaded, not attached: needs {e}")
            except AttachError as e:
                p.attach_error = str(e)
                if strict:
                    raise
        if only is None and self.prepared is not None:
            self._register_struct_ops()
        return done

    def _register_struct_ops(self):
        """Each struct_ops map is registered with the kernel (its programs
        attached through it): a link for ``.struct_ops.link``, else the map itself."""
        for name, pm in self.prepared.maps.items():
            if pm.struct_ops is None or name in self.struct_ops_links:
                continue
            fds = {p: self.programs[p].fd for _, p in pm.struct_ops.fd_slots if self.programs[p].loaded}
            from ebpf_energy.loader import struct_ops  # objects with struct_ops maps only

            try:
                live = self.maps[name]
                self.struct_ops_links[name] = struct_ops.register(name, live.fd, pm.initial, pm.struct_ops, fds,
                                                                  bool(live.flags & struct_ops.BPF_F_LINK))
                for p in fds:
                    self.programs[p].via = f"{self.programs[p].via}, {name}" if self.programs[p].via else name
            except LoaderError as e:
                raise AttachError(f"struct_ops {name}: the kernel refused to register it: {e}") from None

    # -- teardown ----------------------------------------------------------------
    def close(self):
        """Detach, then close programs, maps and BTF (the collection). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for link in self.struct_ops_links.values():
            link.close()
        self.struct_ops_links = {}
        for p in self.programs.values():
            p.via = None
        for p in self.programs.values():
            if p.link is not None:
                p.link.close()
                p.link = None
        for g in self._globals.values():
            g.close()
        if self.collection is not None:
            self.collection.close()
        for p in self.programs.values():
            p.fd = None
        self.maps = {}
        explain.trace("close", f"{self.spec.path}: links, programs, maps and BTF closed")

    # -- reporting ----------------------------------------------------------------
    def map_type_name(self, name):
        return MAP_TYPES.get(self.spec.maps[name].type, "unknown")
