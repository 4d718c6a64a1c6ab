"""Locating and loading a submission folder's ``train_gpt.py`` (it defines ``build_config``).

Loading executes the submission's own module (as ``python train_gpt.py`` would, minus its
``__main__`` block); the leaderboard never does this, it reads JSON and logs only.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from harness.api.config import RunConfig
from harness.api.errors import ConfigError


def submission_file(path: Path) -> Path:
    """``path``'s ``train_gpt.py`` (``path`` may be the folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "train_gpt.py"
        if not candidate.is_file():
            raise ConfigError(f"submission folder {path} has no train_gpt.py")
        return candidate
    if path.is_file() and path.suffix == ".py":
        return path
    raise ConfigError(f"submission {path} does not exist (expected a folder holding train_gpt.py)")


def load_submission(path: Path) -> ModuleType:
    """Import the submission's ``train_gpt.py`` as a module (its ``__main__`` block does not run)."""
    file = submission_file(path)
    name = "pgolf_submission_" + re.sub(r"\W", "_", file.parent.name)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "build_config", None)):
        raise ConfigError(f"{file} defines no build_config() function returning a RunConfig")
    return module


def build_submission_config(path: Path) -> RunConfig:
    """``build_config()`` of the submission at ``path``, checked to be a RunConfig."""
    module = load_submission(path)
    config = module.build_config()
    if not isinstance(config, RunConfig):
        raise ConfigError(
            f"{submission_file(path)}: build_config() returned {type(config).__name__}, expected RunConfig"
        )
    return config
