"""fractalc.records: value records with the semantics of the frozen (and plain) dataclasses they
replaced. The reference is `dataclasses` itself: each behaviour is checked on a record and on
the same class made a dataclass."""
from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from fractalc.records import FrozenInstanceError, field, fields, is_record, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: tuple = ()


@record
class Other:
    x: int
    y: int = 0
    tags: tuple = ()


@record
class Empty:
    """No fields."""


@record
class Meta:
    a: int
    b: int = field(default=1, metadata={"omit_default": True})


@record(frozen=False)
class Bag:
    name: str
    items: list = field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class DPoint:
    x: int
    y: int = 0
    tags: tuple = ()


def test_construction_positional_keyword_and_defaults():
    assert (Point(1).x, Point(1).y, Point(1).tags) == (1, 0, ())
    for args, kw in [((1, 2), {}), ((1,), {"y": 2}), ((), {"y": 2, "x": 1}), ((1, 2, (3,)), {}),
                     ((1,), {"tags": (3,)})]:
        r, d = Point(*args, **kw), DPoint(*args, **kw)
        assert (r.x, r.y, r.tags) == (d.x, d.y, d.tags)
        assert list(vars(r)) == ["x", "y", "tags"]  # field order, whatever the call's order


@pytest.mark.parametrize("args, kw", [((), {}), ((1, 2, 3, 4), {}), ((1,), {"x": 2}), ((1,), {"z": 2})])
def test_bad_calls_raise_type_error_as_a_dataclass_does(args, kw):
    with pytest.raises(TypeError):
        DPoint(*args, **kw)
    with pytest.raises(TypeError):
        Point(*args, **kw)


def test_equality_and_hash_by_value_and_by_class():
    assert Point(1, 2) == Point(1, 2) and hash(Point(1, 2)) == hash(Point(1, 2))
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != Other(1, 2)  # equal fields, another class: unequal, as dataclasses
    assert DPoint(1, 2) != Point(1, 2) and Point(1, 2) != DPoint(1, 2)
    assert Empty() == Empty() and Empty() != Point(0)
    assert len({Point(1, 2), Point(1, 2), Other(1, 2), Point(1, 3)}) == 3
    # the same hash as the dataclass (the fields' tuple), so set orders do not change
    assert hash(Point(1, 2, ("a",))) == hash(DPoint(1, 2, ("a",))) == hash((1, 2, ("a",)))
    assert hash(Empty()) == hash(())
    nan = float("nan")
    assert (Point(nan) == Point(nan)) == (DPoint(nan) == DPoint(nan))


def test_frozen_refuses_assignment_and_deletion():
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2
    with pytest.raises(FrozenInstanceError):
        p.z = 2
    with pytest.raises(AttributeError):  # FrozenInstanceError is an AttributeError
        del p.x
    assert p.x == 1 and not hasattr(p, "z")


def test_mutable_record_and_default_factory():
    a, b = Bag("a"), Bag("a")
    a.items.append(1)
    assert b.items == [] and a.items == [1]  # one list per instance
    a.name = "c"
    assert a.name == "c" and a != b
    with pytest.raises(TypeError):
        hash(a)  # mutable and compared by value: unhashable


def test_repr_matches_the_dataclass():
    assert repr(Point(1, 2, ("a",))) == repr(DPoint(1, 2, ("a",))).replace("DPoint", "Point")
    assert repr(Empty()) == "Empty()"


def test_fields_and_metadata():
    assert [f.name for f in fields(Point)] == [f.name for f in dataclasses.fields(DPoint)]
    assert [f.name for f in fields(Point(1))] == ["x", "y", "tags"]
    (a, b) = fields(Meta)
    assert b.default == 1 and b.metadata == {"omit_default": True} and a.metadata == {}
    assert Meta.b == 1  # the class attribute is the default, as with a dataclass
    assert [f.name for f in fields(DPoint(1))] == ["x", "y", "tags"]  # dataclasses too
    with pytest.raises(TypeError):
        fields(1)
    assert is_record(Point) and is_record(Point(1)) and not is_record(DPoint(1)) and not is_record(3)


def test_replace():
    p = Point(1, 2)
    q = replace(p, y=5)
    assert q == Point(1, 5) and p == Point(1, 2) and type(q) is Point
    with pytest.raises(TypeError):
        replace(p, z=1)
    assert replace(DPoint(1), y=3) == DPoint(1, 3)  # dataclasses too


def test_pickle_and_deepcopy_round_trip():
    for v in (Point(1, 2, ("a",)), Empty(), Bag("x", [1, 2])):
        for back in (pickle.loads(pickle.dumps(v)), copy.deepcopy(v), copy.copy(v)):
            assert back == v and type(back) is type(v)
    assert hash(pickle.loads(pickle.dumps(Point(3)))) == hash(Point(3))


def test_class_errors_as_dataclasses():
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 1
            b: int
    with pytest.raises(ValueError):
        @record
        class Shared:
            a: list = []


def test_own_methods_and_post_init_are_kept():
    @record
    class Own:
        a: int

        def __repr__(self):
            return "own"

        def __post_init__(self):
            if self.a < 0:
                raise ValueError("negative")

    assert repr(Own(1)) == "own"
    with pytest.raises(ValueError):
        Own(-1)


def test_inheritance_appends_fields():
    @record
    class Child(Point):
        z: int = 9

    c = Child(1, 2, (), 3)
    assert [f.name for f in fields(Child)] == ["x", "y", "tags", "z"] and c.z == 3
    assert c != Point(1, 2) and Child(1) == Child(1, 0, (), 9)


def test_a_pickled_hash_is_the_hash_of_the_process_that_reads_it(tmp_path):
    # A frozen record keeps its hash once computed; a string's hash differs between processes
    # (hash randomisation), so the pickle must not carry it.
    import os
    import subprocess
    import sys
    from pathlib import Path
    p = Point(1, 2, ("some text",))
    hash(p)
    data = tmp_path / "p.pickle"
    data.write_bytes(pickle.dumps(p))
    code = ("import pickle, sys; p = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "print(hash(p) == hash((1, 2, ('some text',))), p == type(p)(1, 2, ('some text',)))")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed},
                             cwd=Path(__file__).parent, check=True)  # this module importable
        assert out.stdout.split() == ["True", "True"]
