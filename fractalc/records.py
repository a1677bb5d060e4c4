"""Value records: the part of `dataclasses` fractalc uses, without per-class code generation.

``@dataclass`` writes the source of ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``,
``__setattr__`` and ``__delattr__`` for every class and ``exec``-compiles it: ~0.65 ms a class
on Python 3.11, and a short command (`fractalc check`) defines about sixty (the AST, the IR's
node kinds, the op table, ...). `record` gives a class the same methods as closures over its
field list, with no source compiled, so defining one costs ~20 us.

Semantics, as ``@dataclass(frozen=...)`` with its other options at their defaults:

- fields are the class's annotations in order (after those of record bases); a class attribute
  is the field's default, a `field` gives ``default``, ``default_factory`` or ``metadata``;
  a field without a default after one with a default, or a list/dict/set default, is an error;
- ``__init__`` takes the fields positionally or by name, fills defaults and factories, then
  calls ``__post_init__()`` when the class has one;
- ``__repr__`` is ``Name(a=1, b='x')``; ``__eq__`` compares the fields' tuples of two
  instances of the very same class (another class, even with equal fields, is unequal);
- ``frozen=True`` (the default): assigning or deleting an attribute raises
  `FrozenInstanceError` (an ``AttributeError``), and ``__hash__`` hashes the fields' tuple;
  ``frozen=False``: attributes can be set and instances are unhashable, as a dataclass's;
- a frozen record keeps its hash once computed (the fields cannot change): records nest (an
  AST rule holds its whole body), and a dict key holding one would otherwise hash the whole
  tree at every lookup. Pickles and copies leave the kept hash out;
- a method the class body defines itself is kept; instances have a ``__dict__``, so pickling
  and ``copy.deepcopy`` work as for any plain object.

`fields` and `replace` accept records and, for code that still defines dataclasses (an op kind
registered from outside, for instance), dataclasses too.
"""
from __future__ import annotations

from operator import attrgetter

__all__ = ["FrozenInstanceError", "Field", "field", "record", "fields", "replace", "is_record"]


class FrozenInstanceError(AttributeError):
    """An attribute of a frozen record was assigned or deleted."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()
_HASH = " hash"  # where a frozen record keeps its hash (not an identifier: no field can clash)


class Field:
    """One field of a record: its name, default (or `MISSING`), default factory (or
    `MISSING`) and metadata (a dict, empty unless given)."""

    __slots__ = ("name", "default", "default_factory", "metadata")

    def __init__(self, default=MISSING, default_factory=MISSING, metadata=None):
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.metadata = dict(metadata) if metadata else {}

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, metadata={self.metadata!r})")


def field(*, default=MISSING, default_factory=MISSING, metadata=None) -> Field:
    """A field with a default, a default factory (called per instance) or metadata."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, metadata)


def _is_classvar(annotation) -> bool:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _collect(cls) -> tuple[Field, ...]:
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get("__record_fields__", ()):
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        if isinstance(value, Field):
            f = value
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        else:
            f = Field(value)
        if type(f.default) in (list, dict, set):
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: "
                             "use default_factory")
        f.name = name
        found.pop(name, None)
        found[name] = f
    seen_default = False
    for f in found.values():
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        if seen_default and not has_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
        seen_default = seen_default or has_default
    return tuple(found.values())


def _make_init(cls, flds: tuple[Field, ...]):
    names = tuple(f.name for f in flds)
    known = frozenset(names)
    n = len(names)
    post_init = getattr(cls, "__post_init__", None) is not None
    qual = cls.__qualname__

    specs = tuple((f.name, f.default, f.default_factory) for f in flds)

    def bind(args, kw) -> dict:
        k = len(args)
        if k > n:
            raise TypeError(f"{qual}.__init__() takes {n + 1} positional arguments but "
                            f"{k + 1} were given")
        if not known.issuperset(kw):
            bad = next(x for x in kw if x not in known)
            raise TypeError(f"{qual}.__init__() got an unexpected keyword argument {bad!r}")
        if k and not kw.keys().isdisjoint(names[:k]):
            bad = next(x for x in names[:k] if x in kw)
            raise TypeError(f"{qual}.__init__() got multiple values for argument {bad!r}")
        d = dict(zip(names, args))
        if k + len(kw) == n:  # every field given (no duplicates, all known: checked above)
            for name in names[k:]:  # in field order, whatever the call's order
                d[name] = kw[name]
            return d
        missing = []
        for name, default, factory in specs[k:]:  # in field order, whatever the call's order
            if name in kw:
                d[name] = kw[name]
            elif default is not MISSING:
                d[name] = default
            elif factory is not MISSING:
                d[name] = factory()
            else:
                missing.append(name)
        if missing:
            raise TypeError(f"{qual}.__init__() missing {len(missing)} required argument"
                            f"{'s' if len(missing) > 1 else ''}: "
                            + ", ".join(repr(x) for x in missing))
        return d

    # Positional calls that leave out trailing fields with plain defaults (no factory) take
    # the defaults from one tuple: no per-call binding.
    first = next((i for i, f in enumerate(flds) if f.default is not MISSING
                  or f.default_factory is not MISSING), n)
    plain = all(f.default_factory is MISSING for f in flds[first:])
    tail = tuple(f.default for f in flds[first:]) if plain else ()

    def __init__(self, *args, **kw):
        k = len(args)
        if kw or k > n or k < first or (k < n and not plain):
            self.__dict__.update(bind(args, kw))
        elif k == n:  # every field positionally: the common case, kept short
            self.__dict__.update(zip(names, args))
        else:
            self.__dict__.update(zip(names, args + tail[k - first:]))
        if post_init:
            self.__post_init__()

    __init__.__qualname__ = f"{qual}.__init__"
    return __init__


def _key(names: tuple[str, ...]):
    """self -> the tuple of its `names` attributes (what a dataclass compares and hashes)."""
    if not names:
        return lambda self: ()
    if len(names) == 1:
        get = attrgetter(names[0])
        return lambda self: (get(self),)
    return attrgetter(*names)


def _methods(cls, flds: tuple[Field, ...], frozen: bool) -> dict:
    names = tuple(f.name for f in flds)
    key = _key(names)
    known = frozenset(names)

    def __repr__(self):
        return (f"{type(self).__qualname__}("
                + ", ".join(f"{k}={getattr(self, k)!r}" for k in names) + ")")

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return key(self) == key(other)
        return NotImplemented

    out = {"__init__": _make_init(cls, flds), "__repr__": __repr__, "__eq__": __eq__,
           "__match_args__": names}
    if frozen:
        # The hash is kept once computed: records nest (an AST rule holds its whole body), and
        # hashing a key that holds one would otherwise walk the tree at every lookup. The
        # fields cannot change, so neither can their hash; pickles leave it out (a string's
        # hash differs between processes).
        def __hash__(self):
            d = self.__dict__
            h = d.get(_HASH)
            if h is None:
                h = d[_HASH] = hash(key(self))
            return h

        def __getstate__(self):
            d = self.__dict__
            return {k: v for k, v in d.items() if k != _HASH} if _HASH in d else d

        def __setattr__(self, name, value):
            if type(self) is cls or name in known:
                raise FrozenInstanceError(f"cannot assign to field {name!r}")
            super(cls, self).__setattr__(name, value)

        def __delattr__(self, name):
            if type(self) is cls or name in known:
                raise FrozenInstanceError(f"cannot delete field {name!r}")
            super(cls, self).__delattr__(name)

        out.update(__hash__=__hash__, __getstate__=__getstate__, __setattr__=__setattr__,
                   __delattr__=__delattr__)
    else:
        out["__hash__"] = None  # mutable and compared by value: unhashable, as a dataclass
    d = cls.__dict__
    if "__hash__" in d and not (d["__hash__"] is None and "__eq__" in d):
        del out["__hash__"]  # the class's own __hash__ stays, as with a dataclass
    return out


def record(cls=None, /, *, frozen: bool = True):
    """Class decorator: make `cls` a value record (see the module docstring)."""
    def wrap(cls):
        flds = _collect(cls)
        cls.__record_fields__ = flds
        for name, method in _methods(cls, flds, frozen).items():
            if name in ("__setattr__", "__delattr__") and name in cls.__dict__:
                raise TypeError(f"cannot overwrite attribute {name} in frozen record {cls.__name__}")
            if name == "__hash__" or name not in cls.__dict__:  # __hash__: see _methods
                if callable(method):
                    method.__qualname__ = f"{cls.__qualname__}.{name}"
                setattr(cls, name, method)
        return cls
    return wrap if cls is None else wrap(cls)


def is_record(obj) -> bool:
    """True for a record class or instance."""
    return isinstance(getattr(obj, "__record_fields__", None), tuple)


def fields(obj) -> tuple:
    """The fields of a record (class or instance), in order; `dataclasses.fields` for a
    dataclass. A `TypeError` for anything else."""
    flds = getattr(obj, "__record_fields__", None)
    if flds is not None:
        return flds
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses
        return dataclasses.fields(obj)
    raise TypeError("fields() takes a record or a dataclass, not "
                    f"{type(obj).__name__}")


def replace(obj, /, **changes):
    """A new instance of `obj`'s class with `changes` applied to its fields (the class's
    ``__init__`` checks the names); `dataclasses.replace` for a dataclass."""
    flds = getattr(type(obj), "__record_fields__", None)
    if flds is None:
        if hasattr(obj, "__dataclass_fields__"):
            import dataclasses
            return dataclasses.replace(obj, **changes)
        raise TypeError(f"replace() takes a record or a dataclass, not {type(obj).__name__}")
    for f in flds:
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return type(obj)(**changes)
