"""Run phase 2, training: build the model, optimizers and run plugins; prime, train under
the wallclock cap, and let plugins finish (averaging swaps its weights in here).

Eval-only runs (``train.load_model_path``) rebuild the model from an existing artifact
instead; no training step runs.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from harness.api.config import RunConfig
from harness.api.errors import ConfigError
from harness.pipeline.artifact import load_state_dict
from harness.pipeline.distributed import (
    DistInfo,
)
from harness.pipeline.plugin_manager import PluginManager
from harness.pipeline.runlog import RunLogger
from harness.pipeline.scorer import Scorer
from harness.pipeline.setup import RunState, checkpoint_module, seed_everything
from harness.pipeline.shards import (
    DistributedTokenLoader,
)
from harness.pipeline.trainer import TrainContext, Trainer, TrainResult
from harness.pipeline.unshipped import unshipped_module


def register_run_plugins(manager: PluginManager, config: RunConfig) -> list[Any]:
    """Build the run's observer plugins and register each under its Config's qualified name;
    returns them in config order (the checkpoint keys their state by that order)."""
    observers = [plugin_cfg.build() for plugin_cfg in config.plugins]
    for plugin_cfg, plugin in zip(config.plugins, observers, strict=True):
        manager.register_object(plugin, name=f"{type(plugin_cfg).__module__}:{type(plugin_cfg).__name__}")
    return observers


def wrap_for_training(model: torch.nn.Module, config: RunConfig, dist: DistInfo) -> torch.nn.Module:
    """torch.compile on CUDA (as upstream, fullgraph), then DDP when there are several ranks."""
    wrapped = model
    if dist.device.type == "cuda" and config.train.compile:
        wrapped = torch.compile(model, dynamic=False, fullgraph=True)
    if dist.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dist.local_rank] if dist.device.type == "cuda" else None
        # Buffers are identical on every rank (same seed), so syncing them each forward is
        # wasted traffic; newer torch renamed the switch and warns on the old name.
        no_sync = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(DDP).parameters
            else "broadcast_buffers"
        )
        wrapped = DDP(wrapped, device_ids=ids, **{no_sync: False})
    return wrapped


def _describe_model(model: torch.nn.Module, log: RunLogger) -> None:
    """The architecture's own header lines (components, effective depth, attention backend)."""
    for line in model.describe():
        log.log(line)


def train(run: RunState, scorer: Scorer, resume: bool = False) -> tuple[TrainContext, TrainResult]:
    """Build the model, optimizers and observers; prime, train, and let plugins finish.

    With checkpoints on (or ``resume``), a `harness.pipeline.resume.TrainingCheckpoints` saves
    the training state in the run folder; ``resume`` restores it after priming and training
    continues from its step. Any checkpoint setting other than 0 reaches that module, which
    checks it.
    """
    config, dist = run.config, run.dist
    seed_everything(config.train.seed)
    model = config.model.build(config.data.vocab_size).to(dist.device)
    run.n_params = sum(p.numel() for p in model.parameters())
    run.log.log(f"model_params:{run.n_params}", event="model", model_params=run.n_params)
    _describe_model(model, run.log)
    optimizer = config.optimizer.build(model)
    for line in optimizer.describe():
        run.log.log(line)
    observers = register_run_plugins(run.manager, config)
    ctx = TrainContext(
        config=config,
        model=model,
        optimizer=optimizer,
        log=run.log,
        dist=dist,
        autocast_dtype=run.autocast,
        run_dir=run.run_dir,
    )
    loader = DistributedTokenLoader(
        run.data.data_path, dist.rank, dist.world_size, dist.device, config.data.vocab_size
    )

    def validate() -> dict[str, float]:
        r = scorer.standard(model)
        return {"val_loss": r.val_loss, "val_bpb": r.val_bpb}

    # Before compilation and priming, so plugins that attach parametrizations or buffers
    # (late QAT) are compiled in and their switches are tensors, not baked Python flags.
    run.manager.hook.pg_train_start(ctx=ctx)
    wants_ckpt = resume or config.train.checkpoint_every_minutes != 0 or config.train.stop_after_step != 0
    ckpt = (
        checkpoint_module().TrainingCheckpoints(run.run_dir, config, dist, loader=loader, observers=observers)
        if wants_ckpt
        else None
    )
    trainer = Trainer(
        ctx,
        train_model=wrap_for_training(model, config, dist),
        loader=loader,
        validate=validate,
        hooks=run.manager.hook,
        checkpointer=ckpt,
    )
    trainer.prime()
    # After priming, which resets what it touched.
    start = ckpt.begin(ctx, resume) if ckpt is not None else None
    # NVML sampling on rank 0's GPU over the timed loop only (after compile priming).
    telemetry = unshipped_module("telemetry") if dist.device.type == "cuda" and dist.is_main else None
    sampler = (
        telemetry.GpuSampler(telemetry.nvml_device_for(dist.local_rank)).start()
        if telemetry is not None
        else None
    )
    try:
        result = trainer.run(resume=start)
    finally:
        if sampler is not None:
            run.gpu = sampler.stop()
    run.manager.hook.pg_train_end(ctx=ctx)
    return ctx, result


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
    """Eval-only: rebuild the model from an existing artifact; no training step runs."""
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
