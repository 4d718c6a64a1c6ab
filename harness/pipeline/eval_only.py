"""Eval-only runs (``train.load_model_path``): rebuild the model from an existing artifact
instead of training it, and ship that artifact byte for byte instead of exporting one.

Imported by name (`harness.api.by_name.EVAL_ONLY_MODULE`): only a run whose resolved
configuration loads an artifact embeds this module in its bundle, so a shipped file that trains
does not pay for the path it never takes (pgolf issue 13).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.api.errors import ConfigError
from harness.api.fileio import write_atomic
from harness.pipeline.artifact import load_state_dict
from harness.pipeline.distributed import barrier
from harness.pipeline.export import name_artifact
from harness.pipeline.setup import RunState
from harness.pipeline.trainer import TrainContext, TrainResult


def source_artifact(path: Path) -> Path:
    """The artifact named by ``train.load_model_path``: a .pgolf file or a run folder holding one."""
    if path.is_dir():
        found = sorted(path.glob("*.pgolf"))
        if len(found) != 1:
            raise ConfigError(
                f"train.load_model_path={path} holds {len(found)} .pgolf artifacts; expected exactly one"
            )
        return found[0]
    if not path.is_file():
        raise ConfigError(
            f"train.load_model_path={path} does not exist (expected a .pgolf artifact or a run folder)"
        )
    return path


def load_trained(run: RunState) -> tuple[TrainContext, TrainResult]:
    """The model rebuilt from the artifact; no training step runs."""
    config = run.config
    source = source_artifact(Path(config.train.load_model_path))
    state, manifest = load_state_dict(source, run.manager.registry)
    names = (manifest["quantizer"]["name"], manifest["compressor"]["name"])
    expected = (
        run.manager.registry.name_of(config.quantizer),
        run.manager.registry.name_of(config.compressor),
    )
    if names != expected:
        raise ConfigError(
            f"{source} was written by quantizer/compressor {names}, but this submission uses {expected}"
        )
    model = config.model.build(config.data.vocab_size).to(run.dist.device)
    model.load_state_dict(state, strict=True)
    run.n_params = sum(p.numel() for p in model.parameters())
    run.log.log(f"model_params:{run.n_params}", event="model", model_params=run.n_params)
    run.log.log(f"eval_only: loaded {source} (no training)", event="eval_only", source=str(source))
    ctx = TrainContext(
        config=config,
        model=model,
        optimizer=None,
        log=run.log,
        dist=run.dist,
        autocast_dtype=run.autocast,
        run_dir=run.run_dir,
    )
    return ctx, TrainResult(steps=0, train_time_ms=0.0, stopped_early=False, last_val=None)


def ship_existing_artifact(run: RunState) -> None:
    """The shipped artifact is the loaded file itself, copied byte for byte."""
    source = source_artifact(Path(run.config.train.load_model_path))
    name_artifact(run)
    if run.dist.is_main:
        write_atomic(run.artifact_path, source.read_bytes(), overwrite=False)
        tag, size = f"{run.quantizer_tag}+{run.compressor_tag}", os.path.getsize(run.artifact_path)
        run.log.log(f"Serialized model {tag}: {size} bytes (copied from {source})")
    barrier(run.dist)
