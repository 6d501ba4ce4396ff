"""Config and sweep files: Python files read by path, errors pointed at their lines.

``load_config(path)`` returns a file's ``get_config()``, ``load_sweep(path)`` its
``get_sweep()`` (checked for shape); files import each other by path with
:func:`import_file`; :func:`file_error` points a :class:`~byzjax.sim.ConfigError`
at the line of the file that caused it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import sys
import traceback

import ml_collections

from byzjax._registry import unknown_name
from byzjax.sim._errors import ConfigError

__all__ = ["load_config", "load_sweep", "import_file", "call_file_function",
           "file_error", "SWEEP_FIELDS"]

#: The fields a sweep may have.
SWEEP_FIELDS = ("name", "base", "grid", "hparams", "seeds", "exclude", "extra",
                "overrides", "published")


def _where(path: str, exc: BaseException) -> str:
    """``path:line`` of the deepest frame of ``exc`` inside the file ``path``."""
    target = os.path.abspath(path)
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.abspath(frame.filename) == target:
            line = frame.lineno
    return f"{path}:{line}" if line else path


def file_error(path: str, err: ConfigError) -> ConfigError:
    """``err`` located in the config or sweep file ``path`` that caused it.

    Args:
      path: the file.
      err: the error, raised while checking what the file built.

    Returns:
      A :class:`~byzjax.sim.ConfigError` with the same ``field`` whose message
      starts with ``path:line``, the first line of ``path`` (comments aside)
      that mentions ``err.field``; just ``path`` when no line does.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "cfg.py")
      >>> with open(path, "w") as fh:
      ...     _ = fh.write("c = get_config()\\nc.num_byzantine = 9\\n")
      >>> err = ConfigError("num_byzantine too large", field="num_byzantine")
      >>> str(file_error(path, err)) == f"{path}:2: num_byzantine too large"
      True
    """
    where = path
    if err.field:
        pattern = re.compile(r"(\.|\[['\"]|\b)" + re.escape(err.field) + r"\b")
        try:
            with open(path) as fh:
                for i, text in enumerate(fh, 1):
                    if pattern.search(text.split("#")[0]):
                        where = f"{path}:{i}"
                        break
        except OSError:
            pass
    return ConfigError(f"{where}: {err}", field=err.field)


def _in_folder(module, folder: str) -> bool:
    """Whether ``module`` was loaded from a file in ``folder`` (or below)."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return False
    return os.path.abspath(file).startswith(folder + os.sep)


@contextlib.contextmanager
def _folder_importable(path: str):
    """While a config or sweep file is imported, its folder is importable (as
    for ``python file.py``): ``from cfg import get_config`` finds a sibling.

    Siblings are imported afresh for each file and not left in
    ``sys.modules``: two sweep files in different folders that both import
    a sibling ``cfg`` each get their own (a cached ``cfg`` from the first
    folder would silently give the second file the first one's config). A
    module of the same name imported from elsewhere is set aside meanwhile
    and restored after.
    """
    folder = os.path.dirname(os.path.abspath(path))
    siblings = set()
    for entry in os.listdir(folder):
        full = os.path.join(folder, entry)
        if entry.endswith(".py"):
            siblings.add(entry[:-3])
        elif os.path.isfile(os.path.join(full, "__init__.py")):
            siblings.add(entry)
    set_aside = {name: sys.modules.pop(name) for name in list(sys.modules)
                 if name.split(".")[0] in siblings
                 and not _in_folder(sys.modules[name], folder)}
    before = set(sys.modules)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
        for name in set(sys.modules) - before:
            if name.split(".")[0] in siblings and _in_folder(sys.modules[name], folder):
                del sys.modules[name]
        sys.modules.update(set_aside)


def import_file(path: str, *, relative_to: str | None = None):
    """The Python file ``path`` imported as a module (once; later calls reuse it).

    Config and sweep files import each other with it, by path, so no folder
    has to be on ``sys.path``::

        table_4_1 = import_file("table_4_1.py", relative_to=__file__)

    Args:
      path: the file; relative to the folder of ``relative_to`` if given.
      relative_to: usually the calling file's ``__file__``.

    Raises:
      ConfigError: no such file, or it is not a Python file.
    """
    if relative_to is not None:
        path = os.path.join(os.path.dirname(os.path.abspath(relative_to)), path)
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    name = "_byzjax_file_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot import it (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _folder_importable(path):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def call_file_function(path: str, name: str):
    """Imports the Python file ``path`` and returns ``name()`` (``get_config`` /
    ``get_sweep``). While it is imported its folder is importable, as for
    ``python file.py`` (``from cfg import get_config``); files in other
    folders are imported by path with :func:`import_file`.

    Raises:
      ConfigError: one line naming the file (and line): missing file, syntax
        error, an exception while importing or calling, no ``name()``.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(f"_byzjax_{name}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot import it (not a Python file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        with _folder_importable(path):
            spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{e.filename or path}:{e.lineno}: syntax error: "
                          f"{e.msg}") from e
    except Exception as e:
        raise ConfigError(f"{_where(path, e)}: {type(e).__name__}: {e}") from e
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{path}: defines no {name}() function")
    try:
        return fn()
    except Exception as e:
        raise ConfigError(f"{_where(path, e)}: {name}() raised "
                          f"{type(e).__name__}: {e}") from e


def load_config(path: str) -> ml_collections.ConfigDict:
    """Imports the config file ``path`` and returns its ``get_config()``.

    While the file is imported its folder is importable, as for ``python
    file.py`` (``from cfg import get_config``).

    Args:
      path: a Python file defining ``get_config()``, which returns a run
        config (:func:`~byzjax.sim.get_config` with overrides).

    Returns:
      The run config, not yet validated (:func:`~byzjax.sim.resolve` does it).

    Raises:
      ConfigError: one line naming the file (and line): missing file, syntax
        error, an exception while importing or calling, no ``get_config()``,
        or it does not return a ``ConfigDict``.

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "cfg.py")
      >>> with open(path, "w") as fh:
      ...     _ = fh.write("from byzjax.sim import get_config as default\\n"
      ...                  "def get_config():\\n"
      ...                  "    c = default()\\n"
      ...                  "    c.aggregator = 'krum'\\n"
      ...                  "    return c\\n")
      >>> load_config(path).aggregator
      'krum'
    """
    config = call_file_function(path, "get_config")
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an "
                          "ml_collections.ConfigDict (start from "
                          f"byzjax.sim.get_config()), got {type(config).__name__}")
    return config


def load_sweep(path: str) -> ml_collections.ConfigDict:
    """Imports the sweep file ``path`` and returns its ``get_sweep()``, checked
    for shape (the module docstring lists a sweep's fields).

    Args:
      path: a Python file defining ``get_sweep()``, which returns a
        ``ConfigDict`` or dict.

    Returns:
      The sweep as a ``ConfigDict``, not yet expanded or validated
      (:func:`validate_sweep`).

    Raises:
      ConfigError: naming the file: not a dict, unknown fields, no ``base``.

    Example:
      >>> import pathlib, tempfile
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "sweep.py"
      >>> _ = path.write_text("\\n".join([
      ...     "from byzjax.sim import get_config",
      ...     "def get_sweep():",
      ...     "    return {'name': 'demo', 'base': get_config(),",
      ...     "            'grid': {'aggregator': ['mean', 'krum']}}"]))
      >>> sweep = load_sweep(str(path))
      >>> sweep.name, list(sweep.grid.aggregator)
      ('demo', ['mean', 'krum'])
    """
    sweep = call_file_function(path, "get_sweep")
    if isinstance(sweep, dict):
        sweep = ml_collections.ConfigDict(sweep)
    if not isinstance(sweep, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_sweep() must return a ConfigDict or dict, "
                          f"got {type(sweep).__name__}")
    for key in sweep.keys():
        if key not in SWEEP_FIELDS:
            raise file_error(path, ConfigError(
                unknown_name("sweep field", key, SWEEP_FIELDS), field=key))
    if "base" not in sweep:
        raise ConfigError(f"{path}: get_sweep() has no 'base' (the run config every "
                          "group starts from: base = byzjax.sim.get_config() with "
                          "overrides)")
    if not isinstance(sweep.base, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: the sweep's base must be a run config "
                          f"(byzjax.sim.get_config()), got {type(sweep.base).__name__}")
    return sweep
