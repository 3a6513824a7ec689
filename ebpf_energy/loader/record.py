"""Records: small classes of named fields, for the loader's specs.

What ``@dataclasses.dataclass`` gives the loader (an ``__init__`` taking the
fields in order, defaults, ``__repr__``, ``__eq__``, :func:`replace`,
:func:`astuple`), without importing :mod:`dataclasses`: that module imports
:mod:`inspect` and compiles code for every class, ~8 ms of a ~55 ms
``ebpf-energy load`` of a small object, more than the load itself (README
"Load speed").

The fields are the class's own annotations, in order. A class attribute is a
field's default; :func:`field` gives a fresh default per instance
(``default_factory``) or leaves a field out of the repr. ``frozen=True``
refuses assignment after ``__init__`` and makes the record hashable.
:func:`tuple_record` is ``typing.NamedTuple``'s class syntax, for the same
reason (``typing`` is ~2 ms more).
"""

from collections import namedtuple

_MISSING = object()


class _Field:
    __slots__ = ("default", "factory", "repr")

    def __init__(self, default=_MISSING, factory=None, repr=True):
        self.default, self.factory, self.repr = default, factory, repr


def field(*, default=_MISSING, default_factory=None, repr=True):
    """As dataclasses.field, for the options the loader uses."""
    return _Field(default, default_factory, repr)


def record(cls=None, *, frozen=False):
    """Class decorator: ``@record`` or ``@record(frozen=True)``."""
    if cls is None:
        return lambda c: _make(c, frozen)
    return _make(cls, frozen)


def _make(cls, frozen):
    names = tuple(cls.__dict__.get("__annotations__", {}))
    fields = {}
    for name in names:
        value = cls.__dict__.get(name, _MISSING)
        fields[name] = value if isinstance(value, _Field) else _Field(value)
        if value is not _MISSING:
            delattr(cls, name)  # instances always hold their own value
    required = [n for n in names if fields[n].default is _MISSING and fields[n].factory is None]
    if required and names.index(required[-1]) >= len(required):
        raise TypeError(f"{cls.__name__}: field {required[-1]!r} without a default follows one with a default")
    shown = tuple(n for n in names if fields[n].repr)
    title = cls.__qualname__
    set_field = object.__setattr__

    def __init__(self, *args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"{title}() takes {len(names)} fields, {len(args)} given")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{title}() got field {name!r} twice")
            set_field(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                set_field(self, name, kwargs.pop(name))
                continue
            f = fields[name]
            if f.factory is not None:
                set_field(self, name, f.factory())
            elif f.default is not _MISSING:
                set_field(self, name, f.default)
            else:
                raise TypeError(f"{title}() needs field {name!r}")
        if kwargs:
            raise TypeError(f"{title}() has no field {next(iter(kwargs))!r}")

    def __repr__(self):
        return f"{title}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return astuple(self) == astuple(other)

    cls.__init__, cls.__repr__, cls.__eq__ = __init__, __repr__, __eq__
    cls.__record_fields__ = names
    if frozen:
        def __setattr__(self, name, value):
            raise AttributeError(f"{title} is frozen: use record.replace()")

        cls.__setattr__ = __setattr__
        cls.__delattr__ = __setattr__
        cls.__hash__ = lambda self: hash(astuple(self))
    else:
        cls.__hash__ = None  # mutable and compared by value, as a dataclass
    return cls


def astuple(obj) -> tuple:
    """The field values in order (not recursive: the loader compares specs field by field)."""
    return tuple(getattr(obj, n) for n in obj.__record_fields__)


def replace(obj, **changes):
    """A new record of the same class with ``changes`` applied (a shallow copy otherwise)."""
    values = {n: getattr(obj, n) for n in obj.__record_fields__}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(obj).__qualname__} has no field {sorted(unknown)[0]!r}")
    values.update(changes)
    return type(obj)(**values)


def tuple_record(cls):
    """Class decorator: the class's annotated fields (defaults last) as a
    :func:`collections.namedtuple`, with the class's methods and docstring."""
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = [cls.__dict__[n] for n in names if n in cls.__dict__]
    base = namedtuple(cls.__name__, names, defaults=defaults or None, module=cls.__module__)
    body = {k: v for k, v in cls.__dict__.items()
            if k not in names and k not in ("__dict__", "__weakref__", "__annotations__")}
    made = type(cls.__name__, (base,), dict(body, __slots__=()))
    made.__qualname__ = cls.__qualname__
    return made
