"""Code a configuration switches on, imported by name: a bundle embeds it only when the resolved
configuration asks for it (pgolf issue 13: "dead code removed at function level for what the
run's config never calls; the bundler knows the resolved config").

The bundler follows import statements (`harness.tools.bundle`), so a variant that lives in a
module of its own and is imported through `import_by_name` is left out of every bundle, unless
some configuration object of the run names that module in its ``modules_by_name()``. A
component config declares there what its resolved values import, for example::

    def modules_by_name(self) -> tuple[str, ...]:
        return ("plugins.arch.orthogonal_init",) if self.orthogonal_init else ()

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

BYTE_DATA_MODULE = "harness.pipeline.byte_data"
"""The byte-level data path, imported by name: only runs on byte-level data embed it."""

CALIBRATION_MODULE = "harness.pipeline.calibration"
"""The train-shard calibration batches and the export's ``calibrate`` step, imported by name: a
bundle embeds it when a config names it (the ``gptq`` quantizer's; a ``pg_before_quantize``
plugin that reads ``TrainContext.calibration`` names it too)."""

LAYOUT_MODULE = "harness.api.layout"
"""The payload's symbol layout, imported by name by the artifact writer for a
`harness.api.protocols.LayoutAwareCompressor` only. The ``ans`` coder imports it itself, so its
bundles embed it; another layout-aware compressor's config names it in ``modules_by_name()``."""

GRAD_CLIP_MODULE = "harness.pipeline.grad_clip"
"""The training step's gradient-norm clip, imported by name: only runs with a
``train.grad_clip_norm > 0`` embed it (the naive baseline does not clip). The trainer spells the
name out, so that no bundle ships this constant (tests/unit/test_optim_by_name.py)."""


def modules_reached_by_name(config: Any) -> tuple[str, ...]:
    """The modules a run of the resolved RunConfig ``config`` imports by name, which its bundle
    embeds, in the order first met, without repeats: the harness's own (decided here rather than
    by methods of ``DataConfig``, ``TrainConfig`` and ``EvalConfig``, which every bundle ships),
    `ADAPTATION_MODULE` when it has an ``eval.adapter``, `GRAD_CLIP_MODULE` when it clips,
    `BYTE_DATA_MODULE` when its data may be byte-level (the "bytes" default variant, or a
    vocabulary of 256: a byte tokenizer spec's); then what every configuration object inside it
    names in ``modules_by_name()``. The default dataset's builder is reached by name too but never
    embedded (`harness.pipeline.prepared_data.dataset_builder`)."""
    found: dict[str, None] = {}
    if config.eval.adapter is not None:
        found[ADAPTATION_MODULE] = None
    if config.train.grad_clip_norm > 0:
        found[GRAD_CLIP_MODULE] = None
    if config.data.default_variant == "bytes" or config.data.vocab_size == 256:
        found[BYTE_DATA_MODULE] = None
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
