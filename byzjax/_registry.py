"""Name registries, so configs and tests refer to rules and attacks by name.

One :class:`Registry` per family (aggregators, pre-aggregators, attacks). An
entry records, once, everything other code needs to know about a rule: the
function, its static requirement on ``(n, f)``, its keywords
(:class:`Keyword`: type, range, choices, required or not, traced or static),
the names readers see (``display_name``, ``short_name``) and the report's
``order``. Checks read the entry: :meth:`Registry.check` for ``(n, f)``,
:meth:`Registry.check_kwargs` for a keyword dict (a config's
``aggregator_kwargs``), and the registered function itself checks its stack,
``(n, f)`` and its concrete keyword values when called, before anything is
traced.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import math
import types
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np

from byzjax._tree import check_num_byzantine, check_stack

__all__ = [
    "Entry",
    "Keyword",
    "KeywordTypeError",
    "Registry",
    "RESERVED",
    "at_least",
    "check_values",
    "did_you_mean",
    "greater_than",
    "in_range",
    "normalize_name",
    "unknown_name",
]

#: Keywords the caller of a rule passes itself, never a user's ``*_kwargs``.
RESERVED = frozenset({"num_byzantine", "key", "center", "byzantine_own",
                      "reference"})

_KINDS = ("int", "float", "bool", "str", "any")


class KeywordTypeError(TypeError, ValueError):
    """A keyword of the wrong type: a ``TypeError`` that ``except ValueError``
    (every other bad-keyword error) also catches."""
_NO_DEFAULT = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class Keyword:
    """One keyword-only hyper-parameter of a rule: its type and allowed values.

    Attributes:
      name: the keyword (``"radius"``).
      kind: ``"int"``, ``"float"``, ``"bool"``, ``"str"`` or ``"any"`` (not
        checked: callables, pytrees, dicts).
      low, high: optional bounds of a number.
      low_open, high_open: the bound is excluded (``> low``, ``< high``).
      choices: the allowed values of a ``"str"`` keyword (may include None).
      required: the function has no default for it.
      traced: a number that may be a tracer (vmappable); tracers and JAX
        arrays are never checked, only concrete Python / NumPy values.
      optional: ``None`` is accepted (the default is None).
      finite: a ``"float"`` must be finite (never NaN, nor +-inf).
      default: the function's default (``inspect.Parameter.empty`` if none).
    """

    name: str
    kind: str = "any"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    required: bool = False
    traced: bool = False
    optional: bool = False
    finite: bool = True
    default: Any = _NO_DEFAULT

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"Keyword {self.name!r}: kind must be one of "
                             f"{_KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        """What the keyword accepts, as the end of a sentence.

        Example:
          >>> Keyword("beta", "float", low=0, high=1, high_open=True).describe()
          'a number in [0, 1)'
          >>> Keyword("bucket_size", "int", low=1).describe()
          'an integer >= 1'
        """
        if self.kind == "bool":
            text = "True or False"
        elif self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "str":
            text = "a string"
        elif self.kind == "any":
            text = "anything"
        else:
            text = "an integer" if self.kind == "int" else (
                "a finite number" if self.finite and self.low is None
                and self.high is None else "a number")
            text += self._range()
        if self.optional and not (self.choices and None in self.choices):
            text += ", or None"
        return text

    def _range(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return (f" in {'(' if self.low_open else '['}{_num(lo)}, {_num(hi)}"
                    f"{')' if self.high_open else ']'}")
        if lo is not None:
            return f" {'>' if self.low_open else '>='} {_num(lo)}"
        if hi is not None:
            return f" {'<' if self.high_open else '<='} {_num(hi)}"
        return ""

    def check(self, owner: str, value: Any) -> None:
        """Raises unless ``value`` is allowed; one line naming owner and keyword.

        Tracers and JAX arrays are not checked (a traced value cannot be read
        at trace time); the rule's docstring says what it does with a bad
        traced value (NaN rather than a wrong number).

        Raises:
          TypeError: wrong type (a float for an integer, a string for a number).
          ValueError: out of range, not among the choices, NaN.

        Example:
          >>> Keyword("radius", "float", low=0).check(
          ...     "aggregator 'centered_clipping'", -1.0)
          Traceback (most recent call last):
          ...
          ValueError: aggregator 'centered_clipping': radius must be a number >= 0, ...
        """
        if self.kind == "any":
            return
        if value is None:
            if self.optional or (self.choices is not None and None in self.choices):
                return
            raise KeywordTypeError(self._message(owner, value))
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise KeywordTypeError(self._message(owner, value))
            return
        if self.kind == "str":
            if self.choices is not None and not _hashable_in(value, self.choices):
                error = ValueError if isinstance(value, str) else KeywordTypeError
                raise error(self._message(owner, value))
            if self.choices is None and not isinstance(value, str):
                raise KeywordTypeError(self._message(owner, value))
            return
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if isinstance(value, (bool, np.bool_)):
            raise KeywordTypeError(self._message(owner, value))
        if self.kind == "int":
            if isinstance(value, (int, np.integer)):
                self._check_range(owner, value)
                return
            if self.traced and not isinstance(value, (float, np.floating, str)):
                return  # a traced (or concrete JAX) integer
            raise KeywordTypeError(self._message(owner, value))
        # float
        if isinstance(value, (int, float, np.integer, np.floating)):
            v = float(value)
            if math.isnan(v) or (self.finite and math.isinf(v)):
                raise ValueError(self._message(owner, value))
            self._check_range(owner, v)
            return
        if isinstance(value, (str, bytes, dict, list, tuple)):
            raise KeywordTypeError(self._message(owner, value))
        # tracers, JAX arrays, NumPy arrays of several values: not checked

    def _check_range(self, owner, v) -> None:
        ok = True
        if self.low is not None:
            ok = v > self.low if self.low_open else v >= self.low
        if ok and self.high is not None:
            ok = v < self.high if self.high_open else v <= self.high
        if not ok:
            raise ValueError(self._message(owner, v))

    def _message(self, owner: str, value: Any) -> str:
        return f"{owner}: {self.name} must be {self.describe()}, got {value!r}"


def check_values(owner: str, specs: Mapping[str, Keyword], **values: Any) -> None:
    """Checks each ``values[k]`` against ``specs[k]`` (:meth:`Keyword.check`).

    For factories that are not in a registry (``optim.worker_momentum``,
    ...): one line naming ``owner``, the keyword, what it accepts and the value.

    Example:
      >>> check_values("worker_momentum", {"beta": Keyword("beta", "float",
      ...              low=0, high=1, high_open=True)}, beta=float("nan"))
      Traceback (most recent call last):
      ...
      ValueError: worker_momentum: beta must be a number in [0, 1), got nan
    """
    for key, value in values.items():
        specs[key].check(owner, value)


def _num(x) -> str:
    return repr(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _hashable_in(value, choices) -> bool:
    try:
        return value in choices
    except TypeError:
        return False


def at_least(low: float) -> dict[str, Any]:
    """Declares ``keyword >= low`` (for ``register(keywords=...)``)."""
    return {"low": low}


def greater_than(low: float) -> dict[str, Any]:
    """Declares ``keyword > low`` (for ``register(keywords=...)``)."""
    return {"low": low, "low_open": True}


def in_range(low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> dict[str, Any]:
    """Declares ``low <= keyword <= high`` (bounds optionally excluded)."""
    return {"low": low, "high": high, "low_open": low_open,
            "high_open": high_open}


def _from_annotation(annotation: Any, default: Any) -> dict[str, Any]:
    """Kind, traced, optional and choices read from an annotation and default."""
    text = annotation if isinstance(annotation, str) else (
        "" if annotation is _NO_DEFAULT else getattr(annotation, "__name__",
                                                        str(annotation)))
    parts = [p.strip() for p in _split_union(text)] if text else []
    optional = default is None or "None" in parts
    parts = [p for p in parts if p != "None"]
    out: dict[str, Any] = {"optional": optional}
    if len(parts) == 1 and parts[0].startswith("Literal["):
        choices = ast.literal_eval("(" + parts[0][len("Literal["):-1] + ",)")
        return {**out, "kind": "str", "choices": tuple(choices)
                + ((None,) if optional else ())}
    names = set(parts)
    if names and names <= {"float", "jax.Array", "Array", "Scalar"}:
        return {**out, "kind": "float", "traced": True}
    if names == {"int"}:
        return {**out, "kind": "int"}
    if names == {"bool"}:
        return {**out, "kind": "bool"}
    if names == {"str"}:
        return {**out, "kind": "str"}
    if names:
        return {**out, "kind": "any"}
    # No annotation: the default's type.
    if isinstance(default, bool):
        return {**out, "kind": "bool"}
    if isinstance(default, int):
        return {**out, "kind": "int"}
    if isinstance(default, float):
        return {**out, "kind": "float", "traced": True}
    if isinstance(default, str):
        return {**out, "kind": "str"}
    return {**out, "kind": "any"}


def _split_union(text: str) -> list[str]:
    """``"int | None"`` -> ``["int", "None"]``, brackets respected."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def infer_keywords(fn: Callable, *, reserved: Iterable[str] = RESERVED,
                   declared: Mapping[str, Any] | None = None,
                   owner: str = "") -> tuple[dict[str, Keyword], bool]:
    """The :class:`Keyword` s of ``fn`` and whether it takes ``**kwargs``.

    Every parameter after the first (the stack) that is not ``reserved``;
    kinds from annotations (``float | jax.Array`` is a traced float,
    ``Literal[...]`` a choice) or defaults, then the ``declared`` fields
    (a :class:`Keyword`, or a dict of fields such as :func:`at_least`) on top.
    """
    declared = dict(declared or {})
    reserved = set(reserved)
    params = list(inspect.signature(fn).parameters.values())[1:]
    extra = any(p.kind is p.VAR_KEYWORD for p in params)
    out: dict[str, Keyword] = {}
    for p in params:
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or (
                p.name in reserved):
            continue
        fields = _from_annotation(p.annotation, p.default)
        fields.update(required=p.default is _NO_DEFAULT, default=p.default)
        spec = declared.pop(p.name, None)
        if isinstance(spec, Keyword):
            out[p.name] = spec
            continue
        fields.update(spec or {})
        out[p.name] = Keyword(p.name, **fields)
    for name, spec in declared.items():
        if not extra:
            raise ValueError(f"{owner}: declared keyword {name!r} is not a "
                             "parameter of the function")
        out[name] = spec if isinstance(spec, Keyword) else Keyword(name, **spec)
    return out, extra


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered rule.

    Attributes:
      name: registry name (``"trimmed_mean"``).
      fn: the public function (it checks its stack, ``(n, f)`` and its
        concrete keywords, then runs the rule).
      min_workers: ``f -> smallest n`` the rule accepts.
      requirement: readable form of that condition, e.g. ``"n >= 2f+3"``.
      needs_key: the function takes a ``key=`` PRNG key argument.
      stateful: the function takes a ``center=`` argument (previous aggregate).
      needs_reference: the function takes a ``reference=`` argument, the
        server's own update computed on its own data (FLTrust); the caller
        computes it (the simulator: config ``server_data_size``).
      robust: False for the plain mean (excluded from robustness properties).
      aliases: other accepted names (``"cwtm"``).
      hint: last sentence of the ``(n, f)`` error: what relaxes the
        requirement, or why nothing does.
      keywords: the keywords a user sets (every keyword-only parameter but
        the reserved ones the caller passes itself), name -> :class:`Keyword`.
      extra_keywords: the function also takes ``**kwargs`` (passed on to
        another rule), so :meth:`Registry.check_kwargs` accepts unknown names.
      display_name: the name readers know (figures, pages): ``"trimmed mean"``.
      short_name: the short name of tables (Fabris's thesis): ``"CWTM"``.
      order: position in reports (smaller first).
      rows: ``(num_workers, kwargs) -> m`` for a pre-aggregator whose output
        has another number of rows than its input (``None``: ``m = n``); use
        :meth:`output_rows`.
      limit: ``(num_workers, num_byzantine) -> str | None``, a further static
        condition on ``(n, f)`` (an upper bound, e.g. SMEA's subset count):
        the one-line error, or None; checked by :meth:`Registry.check` after
        the requirement.
    """

    name: str
    fn: Callable[..., Any]
    min_workers: Callable[[int], int]
    requirement: str
    needs_key: bool = False
    stateful: bool = False
    robust: bool = True
    aliases: tuple[str, ...] = ()
    hint: str | None = None
    keywords: Mapping[str, Keyword] = dataclasses.field(default_factory=dict)
    extra_keywords: bool = False
    display_name: str = ""
    short_name: str = ""
    order: int = 0
    rows: Callable[[int, Mapping[str, Any]], int] | None = None
    needs_reference: bool = False
    limit: Callable[[int, int], str | None] | None = None

    def __post_init__(self):
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)
        if not self.short_name:
            object.__setattr__(self, "short_name", self.display_name)
        object.__setattr__(self, "keywords", types.MappingProxyType(
            dict(self.keywords)))

    def output_rows(self, num_workers: int,
                    kwargs: Mapping[str, Any] | None = None) -> int:
        """Rows out of this pre-aggregator for ``num_workers`` rows in.

        ``kwargs`` are the keywords it is called with (defaults filled in).

        Example:
          >>> from byzjax import aggregators
          >>> aggregators.PREAGGREGATORS.entry("bucketing").output_rows(
          ...     10, {"bucket_size": 3})
          4
          >>> aggregators.PREAGGREGATORS.entry("nnm").output_rows(10)
          10
        """
        if self.rows is None:
            return num_workers
        full = {k: kw.default for k, kw in self.keywords.items()
                if kw.default is not _NO_DEFAULT}
        full.update(kwargs or {})
        return int(self.rows(num_workers, full))


class Registry:
    """A mapping from names (and aliases) to :class:`Entry`.

    Args:
      kind: what the registry holds, used in messages (``"aggregator"``).
      reserved: keywords the caller passes itself (not user keywords).
    """

    entry_class: type = Entry

    def __init__(self, kind: str, *, reserved: Iterable[str] = RESERVED):
        self.kind = kind
        self.reserved = frozenset(reserved)
        self._entries: dict[str, Entry] = {}
        self._alias: dict[str, str] = {}

    def register(
        self,
        name: str,
        *,
        min_workers: Callable[[int], int] = lambda f: 2 * f + 1,
        requirement: str = "n > 2f",
        needs_key: bool = False,
        stateful: bool = False,
        needs_reference: bool = False,
        robust: bool = True,
        aliases: tuple[str, ...] = (),
        hint: str | None = None,
        keywords: Mapping[str, Any] | None = None,
        display_name: str | None = None,
        short_name: str | None = None,
        order: int | None = None,
        output_rows: Callable[[int, Mapping[str, Any]], int] | None = None,
        limit: Callable[[int, int], str | None] | None = None,
        reserved: Iterable[str] = (),
        **extra: Any,
    ):
        """Decorator registering ``fn`` under ``name``; returns the checked ``fn``.

        Args:
          name: canonical name (normalised spelling: lower case, ``_``).
          min_workers, requirement, hint: the ``(n, f)`` condition.
          needs_key, stateful, needs_reference, robust, aliases: see
            :class:`Entry`.
          keywords: per keyword, a :class:`Keyword` or the fields to add to
            the one read from the signature, e.g. ``{"radius": at_least(0)}``.
          display_name, short_name, order: how reports show it.
          output_rows: ``(n, kwargs) -> m`` (a pre-aggregator that changes the
            row count).
          limit: ``(n, f) -> error line or None``: a further condition on
            ``(n, f)`` (see :class:`Entry`).
          reserved: more keywords the caller passes itself.
          **extra: fields of a subclass's entry (attacks: ``data_level``, ...).

        Raises:
          ValueError: an empty or non-string name or alias, one already
            registered (after normalisation), or a declared keyword that is
            not a parameter.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string, got "
                             f"{name!r}")
        if _norm(name) != name:
            raise ValueError(f"{self.kind} name {name!r}: register it as "
                             f"{_norm(name)!r} (lower case, '_' for '-')")
        keys = [name]
        for alias in aliases:
            if not isinstance(alias, str) or not alias.strip():
                raise ValueError(f"{self.kind} {name!r}: aliases must be non-empty "
                                 f"strings, got {alias!r}")
            keys.append(_norm(alias))
        for key in keys:
            if key in self._alias:
                raise ValueError(f"{self.kind} name {key!r} is already registered "
                                 f"(for {self._alias[key]!r}); choose another name")
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.kind} {name!r}: an alias repeats a name "
                             f"({', '.join(keys)})")

        def _decorate(fn):
            owner = f"{self.kind} {name!r}"
            kws, open_ = infer_keywords(
                fn, reserved=self.reserved | set(reserved) | self._reserved_for(
                    extra), declared=keywords, owner=owner)
            entry = self.entry_class(
                name, None, min_workers, requirement, needs_key, stateful, robust,
                tuple(aliases), hint, kws, open_, display_name or "",
                short_name or "", 1000 + len(self._entries) if order is None
                else order, output_rows, needs_reference=needs_reference,
                limit=limit, **extra)
            params = inspect.signature(fn).parameters
            call = _CallInfo(next(iter(params)), _default_f(params))
            checked = _checked(fn, functools.partial(self._check_call, entry, call))
            object.__setattr__(entry, "fn", checked)
            for key in keys:
                self._alias[key] = name
            self._entries[name] = entry
            return checked

        return _decorate

    def _settable(self, entry: Entry) -> frozenset:
        """Reserved keywords a user may still set (they override the caller's)."""
        del entry
        return frozenset()

    def _reserved_for(self, extra: Mapping[str, Any]) -> frozenset:
        del extra
        return frozenset()

    def _num_workers(self, num_rows: int, num_byzantine: int) -> int:
        """``n`` of a call whose stack has ``num_rows`` rows."""
        del num_byzantine
        return num_rows

    def _check_call(self, entry: Entry, call: _CallInfo, args, kwargs) -> None:
        """What the registered function checks before running: the stack
        (:func:`byzjax._tree.check_stack`), ``(n, f)`` and concrete keywords."""
        stack = args[0] if args else kwargs.get(call.stack)
        rows = check_stack(entry.name, stack)
        f = kwargs.get("num_byzantine", call.default_f)
        if f is not _NO_DEFAULT:
            self.check(entry.name, num_workers=self._num_workers(rows, f),
                       num_byzantine=f)
        owner = f"{self.kind} {entry.name!r}"
        for key, value in kwargs.items():
            kw = entry.keywords.get(key)
            if kw is not None:
                kw.check(owner, value)

    def entry(self, name: str) -> Entry:
        """Returns the :class:`Entry` for ``name`` (or an alias)."""
        key = _norm(name) if isinstance(name, str) else name
        if key not in self._alias:
            raise ValueError(unknown_name(self.kind, name, self.names(),
                                          aliases=self._alias))
        return self._entries[self._alias[key]]

    def get(self, name: str) -> Callable[..., Any]:
        """Returns the function registered under ``name``."""
        return self.entry(name).fn

    def unregister(self, name: str) -> None:
        """Removes ``name`` and its aliases (a rule registered by a user or a
        test); unknown names are ignored."""
        key = _norm(name) if isinstance(name, str) else name
        canonical = self._alias.get(key)
        if canonical is None:
            return
        del self._entries[canonical]
        for alias in [k for k, v in self._alias.items() if v == canonical]:
            del self._alias[alias]

    def names(self) -> tuple[str, ...]:
        """Canonical names, sorted."""
        return tuple(sorted(self._entries))

    def ordered(self) -> tuple[str, ...]:
        """Canonical names in report order (:attr:`Entry.order`, then name)."""
        return tuple(sorted(self._entries,
                            key=lambda k: (self._entries[k].order, k)))

    def check(self, name: str, *, num_workers: int, num_byzantine: int) -> Entry:
        """Raises ``ValueError`` unless ``name`` accepts ``(n, f)``."""
        entry = self.entry(name)
        check_num_byzantine(
            entry.name, num_workers, num_byzantine,
            min_workers=entry.min_workers(num_byzantine),
            requirement=entry.requirement, hint=entry.hint,
        )
        if entry.limit is not None:
            message = entry.limit(num_workers, num_byzantine)
            if message:
                raise ValueError(message)
        return entry

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any]) -> Entry:
        """Raises unless ``kwargs`` are keywords ``name`` accepts, with good values.

        Unknown keywords (with the closest ones and the list), missing required
        ones, wrong types (``TypeError``) and out-of-range values
        (``ValueError``) are refused with one line. Traced values are not
        checked.

        Example:
          >>> from byzjax import aggregators
          >>> aggregators.AGGREGATORS.check_kwargs("cc", {"radius": -1.0})
          Traceback (most recent call last):
          ...
          ValueError: aggregator 'centered_clipping': radius must be a number >= 0, ...
          >>> aggregators.AGGREGATORS.check_kwargs("krum", {"num_neighbors": 2})
          Traceback (most recent call last):
          ...
          ValueError: aggregator 'krum' has no keyword 'num_neighbors' (did you mean ...
        """
        entry = self.entry(name)
        owner = f"{self.kind} {entry.name!r}"
        accepted = list(entry.keywords)
        for key in kwargs:
            if (key in entry.keywords or entry.extra_keywords
                    or key in self._settable(entry)):
                continue
            if key in self.reserved:
                raise ValueError(f"{owner}: {key} is passed by the caller, not "
                                 "set as a keyword; remove it")
            if not accepted:
                raise ValueError(f"{owner} takes no keywords; remove {key!r}")
            close = did_you_mean(key, accepted)
            hint = (" (did you mean " + " or ".join(map(repr, close)) + "?)"
                    if close else "")
            raise ValueError(f"{owner} has no keyword {key!r}{hint}; its "
                             f"keywords: {', '.join(accepted)}")
        for key, kw in entry.keywords.items():
            if kw.required and key not in kwargs:
                raise ValueError(f"{owner} needs the keyword {key!r} "
                                 f"({kw.describe()})")
        for key, value in kwargs.items():
            if key in entry.keywords:
                entry.keywords[key].check(owner, value)
        return entry

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and _norm(name) in self._alias


class _CallInfo(NamedTuple):
    stack: str  # name of the first parameter
    default_f: Any  # default of num_byzantine (or empty)


def _default_f(params: Mapping[str, inspect.Parameter]) -> Any:
    param = params.get("num_byzantine")
    return _NO_DEFAULT if param is None else param.default


def _checked(fn: Callable, check: Callable) -> Callable:
    """``fn`` preceded by ``check(args, kwargs)``, keeping ``fn``'s doctests.

    The wrapper is built with ``fn``'s globals: ``doctest`` (and so
    ``pytest --doctest-modules``) collects a module's functions only when
    their ``__globals__`` is the module's namespace. Its code reads only its
    closure (``fn``, ``check``), never a global.
    """

    def checked(*args, **kwargs):
        check(args, kwargs)
        return fn(*args, **kwargs)

    wrapper = types.FunctionType(checked.__code__, fn.__globals__, fn.__name__,
                                 None, checked.__closure__)
    functools.update_wrapper(wrapper, fn)
    return wrapper


def did_you_mean(name: Any, choices: Iterable[str], *,
                 aliases: dict[str, str] | None = None) -> list[str]:
    """The valid names closest to ``name`` (``difflib``), canonical, best first.

    ``aliases`` maps every accepted spelling to its canonical name, so a typo
    of an alias suggests the canonical name.

    Example:
      >>> did_you_mean("trimed_mean", ["mean", "trimmed_mean", "krum"])
      ['trimmed_mean']
    """
    table = dict(aliases or {})
    for c in choices:
        table.setdefault(c, c)
    key = _norm(name) if isinstance(name, str) else str(name)
    scored = sorted(((difflib.SequenceMatcher(None, key, c).ratio(), c)
                     for c in table), reverse=True)
    out: list[str] = []
    for score, match in scored:
        # The best match and those nearly as close, never a weak one.
        if score < max(0.6, 0.9 * scored[0][0]):
            break
        if table[match] not in out:
            out.append(table[match])
    return out[:3]


def unknown_name(kind: str, name: Any, choices: Iterable[str], *,
                 aliases: dict[str, str] | None = None) -> str:
    """One line for an unknown name: the closest valid names, then all of them.

    Example:
      >>> unknown_name("attack", "aile", ["alie", "foe"])
      "unknown attack 'aile' (did you mean 'alie'?); known: alie, foe"
    """
    choices = sorted(choices)
    close = did_you_mean(name, choices, aliases=aliases)
    hint = ""
    if close:
        hint = " (did you mean " + " or ".join(repr(c) for c in close) + "?)"
    return f"unknown {kind} {name!r}{hint}; known: {', '.join(choices)}"


def normalize_name(name: str) -> str:
    """The one spelling rule of every registry: case, spaces and dashes ignored.

    Example:
      >>> normalize_name(" Trimmed-Mean ")
      'trimmed_mean'
    """
    return name.strip().lower().replace("-", "_")


_norm = normalize_name
