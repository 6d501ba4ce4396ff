"""Name registries, so configs and tests refer to rules and attacks by name.

One :class:`Registry` per family (aggregators, pre-aggregators, attacks). An
entry records the function and its static requirements on ``(n, f)``, checked
with a readable error *before* anything is traced.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


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
        key = _norm(name)
        if key not in self._alias:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            )
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
        return _norm(name) in self._alias


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")
