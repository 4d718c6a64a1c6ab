"""Every byte that runs is counted: refuse, before training, a run that uses code the bundle cannot carry.

pgolf issue 11, item 1. The bundler (`harness.tools.bundle`) ships ``harness/``, ``plugins/`` and the
submission; a module imported from anywhere else (a file on ``PYTHONPATH``, an installed plugin
package) ran, was not counted in ``bytes_code``, and made the shipped ``train_gpt.py`` fail with
``ModuleNotFoundError`` where it was not installed. `check_code_origin` runs after the plugins are
registered and names each such module.

Allowed: the standard library; installed third-party plugin packages (the ``pgolf`` entry points),
which the bundler carries, except inside a bundle, where they must be served from it; the declared
runtime dependencies (`RUNTIME_DEPENDENCIES`, the ``[project] dependencies`` of pyproject.toml) and
the distributions they require; modules served from a bundle; files under the repository's
``harness/``, ``plugins/``, ``submissions/`` and ``tests/`` and under the running submission's
folder. Checked: the submission module's imports (every module, function or class its namespace
refers to), the registered plugin modules, the modules of the config's components, and, when the
submission runs as a script, every module the process imported. A module the submission reaches only
by a dynamic import (``importlib.import_module``) from a plugin package is not found by the
bundler's import scan; inside the bundle it then fails to import."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import sysconfig
import types
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from harness.api.errors import ConfigError
from harness.pipeline.plugin_packages import plugin_package_roots

RUNTIME_DEPENDENCIES: tuple[str, ...] = (
    "torch",
    "pluggy",
    "numpy",
    "sentencepiece",
    "zstandard",
    "pandas",
    "huggingface_hub",
    "tqdm",
    "nvidia-ml-py",
    "matplotlib",
    "scipy",
    "constriction",
    "python-minifier",
    "brotli",
)
"""pyproject.toml's ``[project] dependencies`` (tests/e2e/test_code_origin.py keeps them equal)."""
STARTUP_MODULES = frozenset({"sitecustomize", "usercustomize", "_virtualenv", "_distutils_hack"})
"""Modules the interpreter's ``site`` step imports before any script runs (environment set-up, not
project code)."""
BUNDLE_ORIGIN = "<pgolf-bundle>/"
_ROOT = Path(__file__).resolve().parents[2]
_PROJECT_DIRS = ("harness", "plugins", "submissions", "tests")
"""Folders of this repository whose code may run. ``tests``: the suite defines observer plugins in its
own modules and runs them in-process; such a run's bundle does not carry them (it is never shipped)."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def allowed_distributions() -> frozenset[str]:
    """The runtime dependencies and, transitively, what they require (normalized names)."""
    seen: set[str] = set()
    todo = [_norm(n) for n in RUNTIME_DEPENDENCIES]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue  # optional extras are not installed by the dependency itself
            todo.append(_norm(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]))
    return frozenset(seen)


@lru_cache(maxsize=1)
def _dists_of_top_level() -> dict[str, list[str]]:
    return md.packages_distributions()


def _stdlib_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("stdlib", "platstdlib")]


def why_foreign(
    name: str, submission_dir: Path | None, plugin_tops: frozenset[str] | None = None
) -> str | None:
    """None when module ``name`` may run in a counted submission, else why not (naming its file).
    ``plugin_tops``: the installed plugin packages (`plugin_package_roots`; looked up when None)."""
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    top = name.partition(".")[0]
    # ``__editable__*``: the import finder pip writes for this project's own editable install.
    if (
        file is None
        or file.startswith(BUNDLE_ORIGIN)
        or top in sys.stdlib_module_names
        or top.startswith("__editable__")
        or top in STARTUP_MODULES
    ):
        return None
    path = Path(file).resolve()
    if any(path.is_relative_to(_ROOT / d) for d in _PROJECT_DIRS):
        return None
    if submission_dir is not None and path.is_relative_to(Path(submission_dir).resolve()):
        return None
    site = [Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])]
    if any(path.is_relative_to(d) for d in _stdlib_dirs()) and not any(path.is_relative_to(s) for s in site):
        return None
    if plugin_tops is None:
        plugin_tops = frozenset(plugin_package_roots())
    if top in plugin_tops and not _in_bundle():
        return None  # an installed pgolf plugin package: the bundler carries it (harness.tools.bundle)
    dists = {_norm(d) for d in _dists_of_top_level().get(top, [])}
    if dists & allowed_distributions():
        return None
    owner = f"distribution {', '.join(sorted(dists))}" if dists else "no installed distribution"
    return f"{name} ({path}; {owner})"


def _in_bundle() -> bool:
    return getattr(sys.modules.get("__main__"), "__pgolf_bundle__", None) is not None


def _referenced_modules(module: types.ModuleType) -> set[str]:
    names = set()
    for value in vars(module).values():
        if isinstance(value, types.ModuleType):
            names.add(value.__name__)
        elif isinstance(value, (type, types.FunctionType)) and isinstance(value.__module__, str):
            names.add(value.__module__)
    return names


def _submission_module(submission_dir: Path) -> tuple[types.ModuleType | None, bool]:
    """The running submission's module and whether it is the process's ``__main__`` script."""
    target = (Path(submission_dir) / "train_gpt.py").resolve()
    main = sys.modules.get("__main__")
    if _in_bundle():
        return main, True
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and not file.startswith(BUNDLE_ORIGIN) and Path(file).resolve() == target:
            return module, name == "__main__"
    return None, False


def check_code_origin(submission_dir: Path, plugin_modules: Iterable[str]) -> None:
    """Refuse the run (`ConfigError`) if the submission or a plugin uses code that is not counted."""
    module, script = _submission_module(submission_dir)
    names = set(plugin_modules)
    if module is not None:
        names |= _referenced_modules(module)
    if script:
        names |= set(sys.modules)
    tops = frozenset(plugin_package_roots())
    foreign = sorted(filter(None, (why_foreign(n, submission_dir, tops) for n in names if n in sys.modules)))
    if foreign:
        raise ConfigError(
            "refused before training: the run uses code that the shipped train_gpt.py would neither carry "
            "nor count (only harness/, plugins/, the submission, the standard library and the declared "
            f"runtime dependencies are allowed): {'; '.join(foreign[:6])}"
            + (f"; and {len(foreign) - 6} more" if len(foreign) > 6 else "")
        )
