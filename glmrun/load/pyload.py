"""Load user callables (`module:function`) from a suite's folder: opt-in Python hooks."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from glmrun.errors import HookLoadError, OutsideSuiteError
from glmrun.safety.suitefiles import inside_suite

_lock = threading.Lock()
_modules: dict[tuple[str, str], ModuleType] = {}


def load_callable(ref: str, suite_dir: Path) -> Callable[..., Any]:
    """Resolve `module:function` (module relative to suite_dir, dotted for packages)."""
    module_name, sep, func_name = ref.partition(":")
    if not sep or not module_name or not func_name:
        raise HookLoadError(f"'{ref}' is not of the form module:function")
    module = _load_module(module_name, suite_dir.resolve())
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        raise HookLoadError(f"module '{module_name}' has no function '{func_name}'")
    return func  # type: ignore[no-any-return]


def _load_module(name: str, root: Path) -> ModuleType:
    key = (str(root), name)
    with _lock:
        if key in _modules:
            return _modules[key]
        parts = name.split(".")
        if not all(part.isidentifier() for part in parts):
            raise HookLoadError(f"'{name}' is not a module name (dotted names only: a.b)")
        try:
            candidates = [inside_suite(root, "/".join(parts) + ".py", "module"),
                          inside_suite(root, "/".join([*parts, "__init__.py"]), "module")]
        except OutsideSuiteError as exc:
            raise HookLoadError(str(exc)) from None
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise HookLoadError(f"no module '{name}' in {root}")
        unique = f"glmrun_hooks_{abs(hash(key))}_{name.replace('.', '_')}"
        spec = importlib.util.spec_from_file_location(unique, path)
        if spec is None or spec.loader is None:
            raise HookLoadError(f"cannot load module '{name}' from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # sys.exit() at import too
            sys.modules.pop(unique, None)
            raise HookLoadError(f"importing '{name}' failed: {type(exc).__name__}: {exc}") from exc
        _modules[key] = module
        return module
