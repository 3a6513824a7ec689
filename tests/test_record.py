"""loader.record: the parts of dataclasses and typing.NamedTuple the loader uses, exactly."""

import copy

import pytest

from ebpf_energy.loader.record import astuple, field, record, replace, tuple_record


@record
class Spec:
    """A spec."""

    name: str
    size: int = 4
    items: list = field(default_factory=list)
    hidden: object = field(default=None, repr=False)

    @property
    def double(self):
        return self.size * 2


@record(frozen=True)
class Frozen:
    a: int
    b: tuple = ()


@tuple_record
class Pair:
    """Two numbers."""

    x: int
    y: int = 7

    def total(self):
        return self.x + self.y


def test_fields_in_order_with_defaults_and_fresh_factories():
    a, b = Spec("a"), Spec("b", 8, [1], hidden=3)
    assert (a.name, a.size, a.items, a.hidden, a.double) == ("a", 4, [], None, 8)
    assert astuple(b) == ("b", 8, [1], 3)
    a.items.append(1)
    assert Spec("c").items == []  # not shared between instances
    assert repr(b) == "Spec(name='b', size=8, items=[1])" and Spec.__doc__ == "A spec."


def test_equality_by_value_replace_copies_and_deepcopy():
    a = Spec("a", items=[1])
    assert a == Spec("a", items=[1]) and a != Spec("a", 5) and a != ("a", 4, [1], None)
    b = replace(a, size=9)
    assert (b.name, b.size, a.size) == ("a", 9, 4) and type(b) is Spec
    assert copy.deepcopy(a) == a and copy.deepcopy(a).items is not a.items
    with pytest.raises(TypeError):
        hash(a)  # mutable and compared by value: not hashable, as a dataclass


@pytest.mark.parametrize("call", [lambda: Spec(), lambda: Spec("a", bogus=1), lambda: Spec("a", name="b"),
                                  lambda: Spec("a", 1, [], None, 5), lambda: replace(Spec("a"), nope=1)])
def test_wrong_arguments_are_type_errors(call):
    with pytest.raises(TypeError):
        call()


def test_a_required_field_after_a_default_is_refused():
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 0
            b: int


def test_frozen_records_refuse_changes_and_hash():
    f = Frozen(1)
    with pytest.raises(AttributeError):
        f.a = 2
    assert replace(f, a=2) == Frozen(2) and {Frozen(1, (2,)): 1}[Frozen(1, (2,))] == 1


def test_tuple_records_are_named_tuples_with_methods():
    p = Pair(1)
    assert p == (1, 7) and p.total() == 8 and p._replace(y=1) == Pair(1, 1) and type(p._replace(y=1)) is Pair
    assert p._fields == ("x", "y") and Pair.__doc__ == "Two numbers." and Pair.__qualname__ == "Pair"
    x, y = p
    assert (x, y) == (1, 7)
