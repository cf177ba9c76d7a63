"""User code named by a config (``module:function`` teachers, judges and checks): where it lives, what
it depends on, and how to import the current version of it.

A recipe keeps its code next to ``pipeline.yaml``. What a stage's output depends on is the function's
module *and* every module it imports from that folder (``teacher.py`` importing ``make_inputs.py``), so
:func:`code_sha256` hashes that closure, read statically from the ``import`` statements without running
anything. :func:`import_fresh` imports a module so that an edited file is seen even in a process that
imported an older version before (a server running many pipelines): modules loaded from the folder are
dropped from ``sys.modules`` first. Both have one owner here: the runner's cache key, the python
client's answer cache and the custom checks all ask this module.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["code_sha256", "import_fresh", "local_closure", "module_file"]


def module_file(module: str, base_dir: Path | None) -> Path | None:
    """The file defining ``module`` (``module`` or ``module:function``): next to the config first, else
    importable; None when it cannot be found (importing it then reports the error)."""
    name = module.partition(":")[0]
    if base_dir is not None:
        rel = Path(*name.split("."))
        for cand in (base_dir / rel.with_suffix(".py"), base_dir / rel / "__init__.py"):
            if cand.is_file():
                return cand.resolve()
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = Path(found.origin) if found is not None and found.origin else None
    return origin if origin is not None and origin.is_file() else None


def _imported_names(source: bytes) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:  # hashed as bytes anyway; importing reports the error
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def local_closure(module: str, base_dir: Path | None) -> list[Path]:
    """``module``'s file and every module under ``base_dir`` it imports, directly or not (sorted)."""
    first = module_file(module, base_dir)
    if first is None:
        return []
    root = base_dir.resolve() if base_dir is not None else first.parent
    seen: set[Path] = set()
    todo = [first]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in _imported_names(f.read_bytes()):
            dep = module_file(name, root)
            if dep is not None and dep.is_relative_to(root) and dep not in seen:
                todo.append(dep)
    return sorted(seen)


def code_sha256(module: str, base_dir: Path | None) -> str | None:
    """sha256 over ``module``'s local closure (file names relative to the folder, and contents)."""
    files = local_closure(module, base_dir)
    if not files:
        return None
    root = base_dir.resolve() if base_dir is not None else files[0].parent
    h = hashlib.sha256()
    for f in files:
        h.update((f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def import_fresh(module: str, search_path: Path | str | None) -> ModuleType:
    """Import ``module`` with ``search_path`` first on ``sys.path``, reloading whatever was loaded from
    that folder before, so the code on disk now is the code that runs."""
    if search_path is None:
        return importlib.import_module(module)
    folder = str(Path(search_path).resolve())
    for p in (folder, str(search_path)):
        while p in sys.path:
            sys.path.remove(p)
    sys.path.insert(0, folder)
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and Path(f).resolve().is_relative_to(folder):
            del sys.modules[name]
    # A module of the same name loaded from elsewhere (another recipe's teacher.py) must not be reused.
    top = module.split(".")[0]
    loaded = sys.modules.get(top)
    if loaded is not None and getattr(loaded, "__file__", None) and module_file(top, Path(folder)) is not None:
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module(module)
