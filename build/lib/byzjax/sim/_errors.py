"""``ConfigError``: the one exception of a bad configuration (no dependencies)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad configuration; the message says what is wrong and what to change.

    Attributes:
      field: the config field at fault, when there is one (used to point at
        the line of a config file that sets it).

    Example:
      >>> err = ConfigError("beta must be in [0, 1), got 1.5", field="beta")
      >>> isinstance(err, ValueError), err.field
      (True, 'beta')
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field
