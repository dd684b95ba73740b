"""Compiled resource templates: a template traced once per variant, then filled row by row.

Rows of an extract differ mostly in their identifiers, dates and measurements; their concepts, units and
flags take few values. `CompiledTemplate` renders the Jinja2 template once per *variant* (the closed
values of a row: concepts, units, flags, and which values are empty or zero) with the *open* values
(the names in `open_names`) replaced by markers. Filters called with a marker are not run but recorded;
the rendered JSON is parsed and pruned as `fhir_adapter.render.render` does, serialised compactly, and cut at
the markers into literal text and slots. Filling a row evaluates the slots (the recorded filters on the
row's real values) and joins the pieces: the same text as rendering the row and serialising the pruned
resource, without the template, the JSON parser and the pruning on every row.

Whatever the trace cannot reproduce falls back to the plain render for that variant or row: a marker
used other than as a whole value (compared, concatenated, iterated), or a slot whose value is empty
(it would have been pruned).

>>> import jinja2
>>> env = jinja2.Environment(loader=jinja2.DictLoader(
...     {"t": '{"id": {{ x.code | upper | json }}, "note": {{ x.note | json }}}'}))
>>> env.filters.update(json=render.to_json, upper=str.upper)
>>> compiled = CompiledTemplate(env, "t", frozenset({"code"}))
>>> @dataclasses.dataclass
... class Row:
...     code: str
...     note: str | None
>>> compiled.text({"x": Row("ab", None)}), compiled.text({"x": Row("cd", None)})
('{"id":"AB"}', '{"id":"CD"}')
>>> len(compiled.variants)
1
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any

import jinja2

from .. import render

#: A resource as compact JSON text, as `patients map` writes it (and the plain render's serialisation).
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_string = json.encoder.encode_basestring   # what the encoder uses for str (ensure_ascii off)
_MARK = "@@fhir-adapter-slot-"
_SLOT = re.compile(r'"@@fhir-adapter-slot-(\d+)@@"')
_LEAK = re.compile("fhir-adapter-slot", re.IGNORECASE)
_SCALARS = (str, int, float)
_PLAIN = frozenset({str, int, float, bool})
MAX_VARIANTS = 4096


class _Untraceable(Exception):
    """The template does something with an open value that a trace cannot replay."""


class _Marker(str):
    """An open value during a trace: usable only whole (passed to a filter, written as JSON, tested for truth)."""

    __slots__ = ("index",)

    def __new__(cls, index: int) -> _Marker:
        marker = super().__new__(cls, f"{_MARK}{index}@@")
        marker.index = index
        return marker

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise _Untraceable

    __str__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse  # type: ignore[assignment]
    __add__ = __radd__ = __mul__ = __mod__ = __getitem__ = __iter__ = __contains__ = _refuse  # type: ignore
    __format__ = _refuse  # type: ignore[assignment]
    __hash__ = str.__hash__

    def __getattribute__(self, name: str) -> Any:    # no str methods (x.strip(), x.upper() ...) in a trace
        if name == "index" or name.startswith("__"):
            return object.__getattribute__(self, name)
        raise _Untraceable


class _Proxy:
    """A row's fact during a trace: open attributes are markers, the others the real values."""

    def __init__(self, fact: Any, markers: dict[str, Any]) -> None:
        self._fact, self._markers = fact, markers

    def __getattr__(self, name: str) -> Any:
        return self._markers[name] if name in self._markers else getattr(self._fact, name)


#: How a slot gets its value from a row's context: ("value", name, attribute or None, index path) or
#: ("call", filter, argument specs, keyword names); an argument spec is ("slot", index) or ("const", value).
Slot = tuple[Any, ...]


class _Trace:
    """The slots of one trace: open values and the filter calls made on them."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []

    def open(self, name: str, attribute: str | None, path: tuple[int, ...] = ()) -> _Marker:
        self.slots.append(("value", name, attribute, path))
        return _Marker(len(self.slots) - 1)

    def open_value(self, value: Any, name: str, attribute: str | None, path: tuple[int, ...] = ()) -> Any:
        """The value as the trace sees it: a marker if open, a tuple with its open members as markers."""
        if type(value) is tuple:
            return tuple(self.open_value(v, name, attribute, (*path, i)) if type(v) is not str else v
                         for i, v in enumerate(value))
        return self.open(name, attribute, path) if value and type(value) in _SCALARS else value

    def call(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Marker:
        specs = tuple(("slot", a.index) if isinstance(a, _Marker) else ("const", a) for a in (*args, *kwargs.values()))
        self.slots.append(("call", function, specs, tuple(kwargs)))
        return _Marker(len(self.slots) - 1)


class _Variant:
    """A traced variant: literal pieces and, between them, functions of the row's context giving the slots."""

    __slots__ = ("pieces", "getters", "__weakref__")

    def __init__(self, pieces: list[str], slots: list[Slot], emitted: list[int]) -> None:
        self.pieces = pieces
        self.getters = [_getter(slots, index) for index in emitted]

    def slots_text(self, context: dict[str, Any]) -> list[str] | None:
        """The JSON text of each emitted slot for a row, or None when a slot's value would have been pruned."""
        out = []
        for getter in self.getters:
            value = getter(context)
            kind = type(value)
            if kind is str:
                if not value:
                    return None
                out.append(_encode_string(value))
            elif kind is int or kind is float:     # what the JSON encoder writes for them
                out.append(int.__repr__(value) if kind is int else
                           float.__repr__(value) if math.isfinite(value) else compact_json(value))
            elif kind is bool:
                out.append("true" if value else "false")
            elif kind is dict and value and all(type(k) is str and type(v) in _PLAIN and v != ""
                                                for k, v in value.items()):
                out.append(compact_json(value))   # flat and nothing to prune: the JSON round trip changes nothing
            else:   # containers, dates: as the plain render sees them after its JSON round trip
                value = render.prune(json.loads(render.to_json(value)))
                if value is None or value == "" or value == [] or value == {}:
                    return None
                out.append(compact_json(value))
        return out

    def join(self, slots: list[str]) -> str:
        """The resource's JSON text: the literal pieces with the slots' texts between them."""
        pieces = self.pieces
        out = [pieces[0]]
        for n, slot in enumerate(slots, 1):
            out.append(slot)
            out.append(pieces[n])
        return "".join(out)


def _getter(slots: list[Slot], index: int) -> Callable[[dict[str, Any]], Any]:
    """A function of the row's context giving one slot's value (running the filters recorded on it)."""
    slot = slots[index]
    if slot[0] == "value":
        _, name, attribute, path = slot
        if path:
            def member(context: dict[str, Any]) -> Any:
                value = context[name] if attribute is None else getattr(context[name], attribute)
                for i in path:
                    value = value[i]
                return value
            return member
        if attribute is None:
            return operator.itemgetter(name)
        get_attribute = operator.attrgetter(attribute)
        return lambda context: get_attribute(context[name])
    _, function, specs, names = slot
    open_args = [i for i, s in enumerate(specs) if s[0] == "slot"]
    if not names and len(open_args) == 1:   # the usual call: one open value among constants, e.g. fhir_id
        i = open_args[0]
        before, after = tuple(s[1] for s in specs[:i]), tuple(s[1] for s in specs[i + 1:])
        part = _getter(slots, specs[i][1])
        seen: list[Any] = [None, None]       # the last text argument and its result: rows of a patient repeat it

        def call_one(context: dict[str, Any]) -> Any:
            value = part(context)
            if type(value) is str and value == seen[0]:
                return seen[1]
            result = function(*before, value, *after)
            if type(value) is str:              # 1 == 1.0 == True: only text arguments are remembered
                seen[0], seen[1] = value, result
            return result

        return call_one
    parts = [_getter(slots, s[1]) if s[0] == "slot" else None for s in specs]
    constants = [s[1] for s in specs]
    positional = len(specs) - len(names)

    def call(context: dict[str, Any]) -> Any:
        args = [part(context) if part is not None else constant
                for part, constant in zip(parts, constants, strict=True)]
        return function(*args[:positional], **dict(zip(names, args[positional:], strict=True)))

    return call


def _variant_part(value: Any, open_names: frozenset[str], name: str) -> Any:
    """A value's part of the variant key: closed values themselves (typed), open ones just `open`; in a
    tuple of an open name, its numbers are open (its texts, e.g. concepts, closed)."""
    if name in open_names:
        if value and type(value) in _SCALARS:
            return _OPEN
        if type(value) is tuple:
            return tuple(_variant_part(v, open_names, name) if type(v) is not str else v for v in value)
    return (type(value), value)


_OPEN = object()


class CompiledTemplate:
    """One template, traced per variant of its context (see the module's docstring).

    `environment`, `name`: the template; `open_names`: the context names and fact attributes that vary row
    by row (identifiers, dates, measurements). Traces run in a private overlay of the environment, whose
    filters record instead of running when given a marker.
    """

    def __init__(self, environment: jinja2.Environment, name: str, open_names: frozenset[str]) -> None:
        self._env = environment.overlay(cache_size=50)
        self._env.filters = dict(environment.filters)
        self.template = self._env.get_template(name)
        self.to_json = environment.filters["json"]
        self.open_names = open_names
        self.variants: dict[tuple[Any, ...], _Variant | None] = {}
        self._shapes: dict[type, Any] = {}     # per fact class, `_shape`'s answer

    def text(self, context: dict[str, Any]) -> str | None:
        """The pruned resource as compact JSON text, or None: render this row the plain way."""
        filled = self.fill(context)
        return filled[0].join(filled[1]) if filled is not None else None

    def fill(self, context: dict[str, Any]) -> tuple[_Variant, list[str]] | None:
        """The row's variant and the JSON text of its slots (`variant.join(slots)` is the resource), or None."""
        key = self._key(context)
        try:
            variant = self.variants.get(key, _MISSING)
        except TypeError:   # a context value that is not hashable: no variant key
            return None
        if variant is _MISSING:
            if len(self.variants) >= MAX_VARIANTS:
                self.variants.clear()
            variant = self.variants[key] = self._trace(context)
        if variant is None:
            return None
        slots = variant.slots_text(context)
        return (variant, slots) if slots is not None else None

    def _shape(self, value: Any) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]] | None:
        """(dataclass fields, a getter of their values and then its properties') of a fact class; None for
        other values."""
        cls = type(value)
        if cls in self._shapes:
            return self._shapes[cls]
        if not dataclasses.is_dataclass(cls):
            self._shapes[cls] = None
            return None
        fields = tuple(f.name for f in dataclasses.fields(cls))
        properties = tuple(n for n in dir(cls) if isinstance(getattr(cls, n, None), property))
        names = fields + properties
        getter = operator.attrgetter(*names) if len(names) > 1 else lambda v: (getattr(v, names[0]),)
        shape = self._shapes[cls] = (fields, getter)
        return shape

    def _key(self, context: dict[str, Any]) -> tuple[Any, ...]:
        key: list[Any] = []
        open_names = self.open_names
        shapes = self._shapes
        for name, value in context.items():
            key.append(name)
            kind = type(value)
            if kind is str and name not in open_names:    # a closed text (an identifier system): itself
                key.append(value)
                continue
            shape = shapes[kind] if kind in shapes else self._shape(value)
            if shape is not None:
                fields, getter = shape
                key.append(kind)
                values = getter(value)
                for f, v in zip(fields, values, strict=False):   # then the properties' values, as they are
                    if f in open_names:
                        key.append(_OPEN if v and type(v) in _SCALARS else _variant_part(v, open_names, f))
                    else:
                        key.append((type(v), v))
                key.extend(values[len(fields):])
            else:
                key.append(_variant_part(value, open_names, name))
        return tuple(key)

    def _trace(self, context: dict[str, Any]) -> _Variant | None:
        trace = _Trace()
        traced: dict[str, Any] = {}
        for name, value in context.items():
            shape = self._shape(value)
            if shape is not None:
                fields = shape[0]
                markers = {f: trace.open_value(getattr(value, f), name, f) for f in fields if f in self.open_names}
                traced[name] = _Proxy(value, markers) if markers else value
            elif name in self.open_names:
                traced[name] = trace.open_value(value, name, None)
            else:
                traced[name] = value
        filters = _Recorders(self._env.filters, trace)
        filters["json"] = self._json
        saved, self._env.filters = self._env.filters, filters   # templates look filters up when they render
        try:
            text = "".join(self.template.root_render_func(self.template.new_context(traced, shared=True)))
        except _Untraceable:
            return None
        finally:
            self._env.filters = saved
        skeleton = compact_json(render.prune(json.loads(text)))
        parts = _SLOT.split(skeleton)
        pieces, emitted = parts[0::2], [int(i) for i in parts[1::2]]
        if any(_LEAK.search(piece) for piece in pieces):
            return None    # a marker inside a longer string, or changed: not a whole value
        return _Variant(pieces, trace.slots, emitted)

    def _json(self, value: Any) -> str:
        if isinstance(value, _Marker):
            return f'"{_MARK}{value.index}@@"'
        return self.to_json(value)


class _Recorders(dict):  # type: ignore[type-arg]
    """The filters of a trace, wrapped when the template first asks for them: a filter given a marker is
    recorded in the trace instead of run."""

    def __init__(self, filters: dict[str, Callable[..., Any]], trace: _Trace) -> None:
        super().__init__()
        self.filters, self.trace = filters, trace

    def __missing__(self, name: str) -> Callable[..., Any]:
        function, trace = self.filters[name], self.trace

        @functools.wraps(function)    # keeps Jinja's pass_context / pass_environment marks
        def record(*args: Any, **kwargs: Any) -> Any:
            given = (*args, *kwargs.values())
            if any(isinstance(a, _Marker) for a in given):
                return trace.call(function, args, kwargs)
            if any(_holds_marker(a) for a in given):
                raise _Untraceable     # a marker inside a container: the filter would see the marker
            return function(*args, **kwargs)

        self[name] = record
        return record

    def __contains__(self, name: object) -> bool:
        return name in self.filters or dict.__contains__(self, name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]  # Jinja's compiler asks
        return self[name] if name in self else default  # noqa: SIM401


def _holds_marker(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(isinstance(v, _Marker) or _holds_marker(v) for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, _Marker) or _holds_marker(v) for v in value.values())
    return False


_MISSING: Any = object()
