"""Run-time tamper checks on the code and settings that decide a score (defence in depth).

pgolf issue 11: a submission that replaced ``harness.pipeline.eval.count_bytes`` at import halved
its BPB; hooks replaced ``measure_budget`` or wrote ``eval.eval_stride`` into the frozen config
with ``object.__setattr__``, and the run reported the result. Python cannot stop code running in
the same process from doing this, so these checks only make it loud: a run whose scoring
functions or resolved config changed after they were fixed is refused, naming what changed.
The trusted check is `pgolf verify`, which scores the artifact in a process that never runs
submission code (`harness.tools.trusted_score`).

`ScoringSnapshot` records, when this module is imported (the runner imports it, so before a
submission that imports the runner can run), every function and class attribute the scoring
modules define, and the code object of each function. `check_scoring_code` compares the live
objects with it, and also refuses a function whose code was compiled from a file other than its
module's (a replacement written in the submission, whenever it was installed).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
from collections.abc import Iterator
from typing import Any

from harness.api import config as cfgmod
from harness.api.config import RunConfig
from harness.api.errors import ConfigError

SCORING_MODULES: tuple[str, ...] = (
    "harness.pipeline.bpb",
    "harness.pipeline.eval",
    "harness.pipeline.scorer",
    "harness.pipeline.scoring",
    "harness.pipeline.budget",
    "harness.pipeline.artifact",
    "harness.pipeline.shards",
    "harness.pipeline.report",
)
"""Modules whose functions compute the score, the byte counts or the verdict."""


def _members(module: types.ModuleType) -> Iterator[tuple[str, Any]]:
    """``(dotted name, object)`` of the module's own functions and classes, and the functions
    defined in those classes (``Scorer.standard``)."""
    prefix = module.__name__
    for name, obj in vars(module).items():
        if isinstance(obj, (types.FunctionType, type)) and not name.startswith("__"):
            yield f"{prefix}.{name}", obj
            if isinstance(obj, type) and obj.__module__ == prefix:
                for attr, member in vars(obj).items():
                    if isinstance(member, (types.FunctionType, staticmethod, classmethod, property)):
                        yield f"{prefix}.{name}.{attr}", member


def _code_of(obj: Any) -> types.CodeType | None:
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if callable(obj) and not isinstance(obj, type):
        obj = inspect.unwrap(obj)  # a decorated function: its own code, not the decorator's
    return getattr(obj, "__code__", None)


class ScoringSnapshot:
    """The scoring modules' functions and classes as they were when the snapshot was taken."""

    def __init__(self, modules: tuple[str, ...] = SCORING_MODULES) -> None:
        self.modules = modules
        self.objects: dict[str, Any] = {}
        self.codes: dict[str, types.CodeType | None] = {}
        for name in modules:
            for dotted, obj in _members(importlib.import_module(name)):
                self.objects[dotted] = obj
                self.codes[dotted] = _code_of(obj)

    def changes(self) -> list[str]:
        """One line per scoring function or class that is no longer the one snapshotted."""
        live: dict[str, Any] = {}
        for name in self.modules:
            live.update(_members(sys.modules[name]))
        found = []
        for dotted, obj in self.objects.items():
            now = live.get(dotted)
            if now is not obj:
                found.append(f"{dotted} was replaced (by {_describe(now)})")
            elif _code_of(now) is not self.codes[dotted]:
                found.append(f"{dotted} had its code swapped (now from {_describe(now)})")
        named = {line.split(" ", 1)[0] for line in found}
        for dotted, obj in live.items():
            foreign = (
                None if dotted in named or dotted.rsplit(".", 1)[-1].startswith("__") else _foreign_code(obj)
            )
            if foreign:
                found.append(f"{dotted} runs code from {foreign}, not from the module that defines it")
        return found


def _source_file(obj: Any) -> str | None:
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    return getattr(module, "__file__", None)


def _foreign_code(obj: Any) -> str | None:
    """The file ``obj``'s code was compiled from when that is not its module's file (else None)."""
    code = _code_of(obj)
    if code is None:
        return None
    home = _source_file(obj.fget if isinstance(obj, property) else obj)
    return code.co_filename if home is None or code.co_filename != home else None


def _describe(obj: Any) -> str:
    code = _code_of(obj)
    where = f" from {code.co_filename}:{code.co_firstlineno}" if code is not None else ""
    return f"{type(obj).__name__} {getattr(obj, '__qualname__', repr(obj)[:60])}{where}"


SNAPSHOT = ScoringSnapshot()
"""Taken when this module is first imported (by `harness.pipeline.runner`)."""


def check_scoring_code(when: str, snapshot: ScoringSnapshot = SNAPSHOT) -> None:
    """Refuse the run (`ConfigError`) if a scoring function or class changed since ``snapshot``."""
    changed = snapshot.changes()
    if changed:
        raise ConfigError(
            f"refused {when}: the harness's scoring code was changed inside the run "
            f"(a submission or plugin patched it): {'; '.join(changed[:6])}"
            + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
        )


def config_fingerprint(config: RunConfig) -> str:
    """The resolved config as canonical JSON, without ``plugins`` (an observer's Config may carry its
    own mutable state, such as a list it appends to): what `check_config_unchanged` compares."""
    tree = json.loads(cfgmod.dumps(config))
    tree.pop("plugins", None)
    return json.dumps(tree, sort_keys=True)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...[{len(text)} chars]"


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}


def check_config_unchanged(config: RunConfig, fingerprint: str, when: str) -> None:
    """Refuse the run if the frozen resolved config no longer dumps to ``fingerprint`` (something wrote
    into it with ``object.__setattr__``), naming each changed field with its old and new value."""
    now = config_fingerprint(config)
    if now == fingerprint:
        return
    old, new = _flat(json.loads(fingerprint)), _flat(json.loads(now))
    diffs = [
        f"{key}: {_short(old.get(key, '<absent>'))} -> {_short(new.get(key, '<absent>'))}"
        for key in sorted(set(old) | set(new))
        if old.get(key, "<absent>") != new.get(key, "<absent>")
    ]
    raise ConfigError(
        f"refused {when}: the resolved config changed during the run (a plugin or hook wrote into the "
        f"frozen config): {'; '.join(diffs[:6])}"
    )
