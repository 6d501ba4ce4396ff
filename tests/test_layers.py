"""The package's import structure: ``byzjax.sim``'s layers and where imports live.

``byzjax.sim`` is built in layers, bottom to top (``docs/ARCHITECTURE.md``): a
module imports only from layers below it, so there is no import cycle and a
newcomer can read the package from the bottom up. Function-local imports are
kept for optional dependencies (and the command line's lazy commands).
"""

from __future__ import annotations

import ast
import pathlib

import byzjax

ROOT = pathlib.Path(byzjax.__file__).parent

#: byzjax.sim's modules, bottom layer first; a module may import only from
#: earlier layers.
SIM_LAYERS = [
    {"_errors"},
    {"_fields"},
    {"_validate"},
    {"_spec"},
    {"_store", "_checkpoint"},
    {"_kit", "_diagnostics"},
    {"_single", "_server_kit", "_p2p"},
    {"_guanyu", "_liubei"},
    {"_program"},
    {"_records"},
    {"_compile"},
    {"_run"},
    {"_files"},
    {"_grid"},
    {"_schedule"},
]

#: Packages imported inside functions because they are optional (extras) or
#: slow to import and needed by one command only.
OPTIONAL = {"matplotlib", "jinja2", "pandas", "pyarrow", "PIL", "tensorboardX",
            "clu", "tensorflow", "tensorflow_datasets", "selenium", "torch",
            "byzfl", "tqdm", "orbax", "textwrap", "sklearn",
            "byzjax.data._tfds"}


def _imports(tree: ast.AST, package: str):
    """``(module, node)`` for every import in ``tree`` (absolute names)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 \
                    else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield name, node
            for alias in node.names:  # from byzjax.sim import _store
                yield f"{name}.{alias.name}", node


def _sim_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[:2] == ["byzjax", "sim"] and len(parts) >= 3:
        return parts[2]
    return None


def test_sim_layers_import_only_downwards():
    layer = {m: i for i, group in enumerate(SIM_LAYERS) for m in group}
    files = sorted(p for p in (ROOT / "sim").glob("_*.py") if p.name != "__init__.py")
    unknown = [f.stem for f in files if f.stem not in layer]
    assert not unknown, f"add {unknown} to SIM_LAYERS (and docs/ARCHITECTURE.md)"
    for path in files:
        tree = ast.parse(path.read_text())
        for name, node in _imports(tree, "byzjax.sim"):
            target = _sim_module(name)
            if target is None or target not in layer:
                continue
            assert layer[target] < layer[path.stem], (
                f"byzjax/sim/{path.name}:{node.lineno} imports {target} "
                f"(layer {layer[target]}) from layer {layer[path.stem]}: "
                "import only from lower layers")


def test_lower_sim_layers_do_not_import_jax():
    for stem in ("_errors", "_fields"):
        tree = ast.parse((ROOT / "sim" / f"{stem}.py").read_text())
        names = {name.split(".")[0] for name, _ in _imports(tree, "byzjax.sim")}
        assert "jax" not in names, f"byzjax/sim/{stem}.py imports jax"


def test_function_local_imports_are_optional_dependencies():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "cli.py":  # lazy commands
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not (
                        isinstance(node, ast.ImportFrom) and node.level):
                    mods = ([a.name for a in node.names]
                            if isinstance(node, ast.Import) else [node.module])
                    if any(m.split(".")[0] not in OPTIONAL for m in mods):
                        rel = path.relative_to(ROOT.parent)
                        bad.append(f"{rel}:{node.lineno} {', '.join(mods)}")
    assert not bad, "function-local imports of required modules:\n" + "\n".join(bad)
