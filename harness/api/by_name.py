"""Code a configuration switches on, imported by name: a bundle embeds it only when the resolved
configuration asks for it (pgolf issue 13: "dead code removed at function level for what the
run's config never calls; the bundler knows the resolved config").

The bundler follows import statements (`harness.tools.bundle`), so a variant that lives in a
module of its own and is imported through `import_by_name` is left out of every bundle, unless
some configuration object of the run names that module in its ``modules_by_name()``. A
component config declares there what its resolved values import, for example::

    def modules_by_name(self) -> tuple[str, ...]:
        return ("plugins.optim.muon_banks",) if self.bank_arithmetic else ()

`modules_reached_by_name` walks the whole resolved configuration (dataclass fields, lists, tuples
and mappings, so the GPT's components count too) and collects those names; a run's bundles embed
them (`harness.tools.run_code`). A shipped file whose configuration was
changed to need a module it does not embed stops with ``ModuleNotFoundError: module ... was
not bundled into this train_gpt.py``, never with a silently different computation.

The idea is the code splitting of JavaScript bundlers (dynamic ``import()`` chunks), decided at
bundle time from the configuration instead of at run time.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from types import ModuleType
from typing import Any

from harness.api.errors import ConfigError


def import_by_name(name: str) -> ModuleType:
    """The module ``name``, imported so that the bundler's import scan does not follow it: the
    configuration that needs it must name it in ``modules_by_name()``."""
    return importlib.import_module(name)


ADAPTATION_MODULE = "harness.pipeline.adaptation"
"""The score-first TTT walk, imported by name: only runs with an ``eval.adapter`` embed it."""


def modules_reached_by_name(config: Any) -> tuple[str, ...]:
    """The modules a run of the resolved RunConfig ``config`` imports by name, which its bundle
    embeds: `ADAPTATION_MODULE` when it has an ``eval.adapter``, then what every configuration
    object inside it names in ``modules_by_name()``, in the order first met, without repeats. The
    default dataset's builder is reached by name too but never embedded
    (`harness.pipeline.prepared_data.dataset_builder`)."""
    found: dict[str, None] = {}
    if config.eval.adapter is not None:
        found[ADAPTATION_MODULE] = None
    _walk(config, found, set())
    return tuple(found)


def _walk(value: Any, found: dict[str, None], seen: set[int]) -> None:
    if id(value) in seen or isinstance(value, (str, bytes, int, float, bool, type(None))):
        return
    seen.add(id(value))
    if is_dataclass(value) and not isinstance(value, type):
        declared = getattr(value, "modules_by_name", None)
        if callable(declared):
            names = declared()
            if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
                raise ConfigError(
                    f"{type(value).__name__}.modules_by_name() must return a tuple of module names, "
                    f"got {names!r}"
                )
            found.update(dict.fromkeys(names))
        for f in fields(value):
            _walk(getattr(value, f.name), found, seen)
    elif isinstance(value, Mapping):
        for v in value.values():
            _walk(v, found, seen)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _walk(v, found, seen)
