"""The run's preflight: every component of the resolved config is looked up and built once, and
the export path is exercised end to end on a tiny tensor, before any training step.

Why: export runs after training, so a compressor that is not registered, or whose ``build()``
returns None, used to fail only when the trained weights were about to be written, and the
training was lost (issue 11). Here the quantizer quantizes a small state dict, the artifact
writer writes it with the compressor into a temporary folder, and the loader rebuilds both from
the manifest and dequantizes it, the same calls `harness.pipeline.export` and
`harness.pipeline.scoring` make on the real weights. Run plugins (averagers, QAT, extra
exports) and the schedule are built once too (the optimizer needs the model: training builds
it first thing). Nothing is written in the run folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from harness.api.config import RunConfig
from harness.api.errors import ConfigError, PgolfError
from harness.api.registry import Registry
from harness.pipeline.artifact import config_to_json, load_state_dict, write_artifact

_KIND_OF_FIELD = {"model": "arch", "quantizer": "quantizer", "compressor": "compressor"}
"""The components the artifact's manifest names (by registry name): they must be registered.
Run plugins may be inline classes of the submission file (never named in an artifact)."""


def _tiny_state() -> dict[str, torch.Tensor]:
    """A small state dict named like a model's: two matrices large enough that quantizers
    quantize them rather than keep them as floats (upstream keeps tensors of <= 65,536
    elements), and a vector; drawn from a private generator so the run's seeded RNG is untouched."""
    gen = torch.Generator().manual_seed(0)
    return {
        "blocks.0.attn.c_q.weight": torch.randn(256, 320, generator=gen) * 0.02,
        "blocks.0.mlp.fc.weight": torch.randn(320, 256, generator=gen) * 0.02,
        "blocks.0.attn_scale": torch.ones(256),
    }


def _registered(registry: Registry, where: str, cfg: Any, kind: str) -> str:
    """The registered name of ``cfg`` (and that it is registered as ``kind``), else ConfigError."""
    name = registry.name_of(cfg)
    found = [c for c in registry if c.name == name and c.config_cls is type(cfg)]
    if all(c.kind != kind for c in found):
        kinds = ", ".join(sorted({c.kind for c in found}))
        raise ConfigError(f"{where}: {type(cfg).__qualname__} is registered as {kinds}, not as {kind}")
    return name


def _built(where: str, cfg: Any, *args: Any) -> Any:
    component = cfg.build(*args)
    if component is None:
        raise ConfigError(f"{where}: {type(cfg).__qualname__}.build() returned None")
    return component


def preflight(config: RunConfig, registry: Registry) -> None:
    """Refuse the run now (ConfigError) if a component cannot be found or built, or the
    quantize -> compress -> write -> read -> dequantize round trip fails on a tiny tensor."""
    names = {
        field: _registered(registry, field, getattr(config, field), kind)
        for field, kind in _KIND_OF_FIELD.items()
    }
    extras = [("schedule", config.schedule)] if config.schedule is not None else []
    for where, cfg in extras + [(f"plugins[{i}]", p) for i, p in enumerate(config.plugins)]:
        _built(where, cfg)
    quantizer = _built("quantizer", config.quantizer)
    compressor = _built("compressor", config.compressor)
    for where, obj, methods in (
        ("quantizer", quantizer, ("quantize", "dequantize")),
        ("compressor", compressor, ("compress", "decompress")),
    ):
        missing = [m for m in methods if not callable(getattr(obj, m, None))]
        if missing:
            raise ConfigError(f"{where}: {type(obj).__qualname__} has no {', '.join(missing)}()")
    state = _tiny_state()
    try:
        with tempfile.TemporaryDirectory(prefix="pgolf_preflight_") as tmp:
            path = Path(tmp) / "preflight.pgolf"
            write_artifact(
                path,
                quantizer.quantize(dict(state)),
                quantizer_name=names["quantizer"],
                quantizer_config=config_to_json(config.quantizer),
                compressor=compressor,
                compressor_name=names["compressor"],
                compressor_config=config_to_json(config.compressor),
            )
            back, _manifest = load_state_dict(path, registry)
    except PgolfError as exc:
        raise ConfigError(f"preflight: the export round trip failed on a tiny tensor: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's own failure, named before training starts
        raise ConfigError(
            f"preflight: quantizer {names['quantizer']!r} + compressor {names['compressor']!r} failed "
            f"on a tiny tensor ({type(exc).__name__}: {exc})"
        ) from None
    bad = [k for k, v in state.items() if k not in back or tuple(back[k].shape) != tuple(v.shape)]
    if bad:
        raise ConfigError(
            f"preflight: quantizer {names['quantizer']!r} + compressor {names['compressor']!r} did not give "
            f"back {', '.join(bad)} with its shape"
        )
