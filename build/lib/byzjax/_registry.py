"""Name registries, so configs and tests refer to rules and attacks by name.

One :class:`Registry` per family (aggregators, pre-aggregators, attacks). An
entry records the function and its static requirements on ``(n, f)``, checked
with a readable error *before* anything is traced.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Iterable

__all__ = ["Entry", "Registry", "did_you_mean", "unknown_name"]


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered rule.

    Attributes:
      name: registry name (``"trimmed_mean"``).
      fn: the pure function.
      min_workers: ``f -> smallest n`` the rule accepts.
      requirement: readable form of that condition, e.g. ``"n >= 2f+3"``.
      needs_key: the function takes a ``key=`` PRNG key argument.
      stateful: the function takes a ``center=`` argument (previous aggregate).
      robust: False for the plain mean (excluded from robustness properties).
      aliases: other accepted names (``"cwtm"``).
      hint: last sentence of the ``(n, f)`` error: what relaxes the
        requirement, or why nothing does.
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


class Registry:
    """A mapping from names (and aliases) to :class:`Entry`."""

    def __init__(self, kind: str):
        self.kind = kind
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
        robust: bool = True,
        aliases: tuple[str, ...] = (),
        hint: str | None = None,
    ):
        """Decorator registering ``fn`` under ``name``."""

        def _decorate(fn):
            entry = Entry(name, fn, min_workers, requirement, needs_key, stateful,
                          robust, tuple(aliases), hint)
            for key in (name, *aliases):
                key = _norm(key)
                if key in self._alias:
                    raise ValueError(f"{self.kind} name {key!r} registered twice")
                self._alias[key] = name
            self._entries[name] = entry
            return fn

        return _decorate

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

    def names(self) -> tuple[str, ...]:
        """Canonical names, sorted."""
        return tuple(sorted(self._entries))

    def check(self, name: str, *, num_workers: int, num_byzantine: int) -> Entry:
        """Raises ``ValueError`` unless ``name`` accepts ``(n, f)``."""
        from byzjax._tree import check_num_byzantine

        entry = self.entry(name)
        check_num_byzantine(
            entry.name, num_workers, num_byzantine,
            min_workers=entry.min_workers(num_byzantine),
            requirement=entry.requirement, hint=entry.hint,
        )
        return entry

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and _norm(name) in self._alias


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
