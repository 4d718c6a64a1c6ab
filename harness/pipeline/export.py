"""Run phase 3, export: rank 0 quantizes, compresses and writes the artifact file, then logs
its size, the code size and the order-0 entropy of its symbols (an eval-only run copies the
artifact it loaded instead).

Before quantizing, rank 0 hands ``pg_before_quantize`` plugins and a `CalibratedQuantizer`
(GPTQ) the only tokens they may read: `TrainCalibration` batches from the train shards
(`harness.pipeline.calibration`, imported by name: a shipped file has them when its configuration
names `CALIBRATION_MODULE`, a run from the repository always). Only rank 0 calibrates and
quantizes; every rank then reads the same artifact back from disk, so no statistics need to cross
ranks (the record of 2026-04-09 collects Hessians on every rank, but only rank 0's file is written
and read back).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import ModuleType

import harness
from harness.api.by_name import CALIBRATION_MODULE, import_by_name
from harness.api.context import TrainContext
from harness.api.fileio import write_atomic
from harness.api.protocols import CalibratedQuantizer, LayoutAwareCompressor
from harness.pipeline.artifact import config_to_json, write_artifact
from harness.pipeline.distributed import (
    barrier,
)
from harness.pipeline.setup import RunState
from harness.pipeline.training import source_artifact
from harness.pipeline.unshipped import skipped_line, unshipped_module


def _name_artifact(run: RunState) -> None:
    """The log tags and the artifact's path. Tags come from the built components (an "intn"
    quantizer calls itself int5 or int6); the manifest names registry entries instead."""
    run.quantizer_tag, run.compressor_tag = (
        run.config.quantizer.build().name,
        run.config.compressor.build().name,
    )
    run.artifact_path = run.run_dir / f"final_model.{run.quantizer_tag}.{run.compressor_tag}.pgolf"


def ship_existing_artifact(run: RunState) -> None:
    """Eval-only: the shipped artifact is the loaded file itself, copied byte for byte."""
    source = source_artifact(Path(run.config.train.load_model_path))
    _name_artifact(run)
    if run.dist.is_main:
        write_atomic(run.artifact_path, source.read_bytes(), overwrite=False)
        tag, size = f"{run.quantizer_tag}+{run.compressor_tag}", os.path.getsize(run.artifact_path)
        run.log.log(f"Serialized model {tag}: {size} bytes (copied from {source})")
    barrier(run.dist)


def export(run: RunState, ctx: TrainContext) -> None:
    """Rank 0 quantizes, compresses and writes the artifact; every rank learns its path."""
    config, registry = run.config, run.manager.registry
    _name_artifact(run)
    if run.dist.is_main:
        state = {k: v.detach().to("cpu").clone() for k, v in ctx.model.state_dict().items()}
        calibration = _calibration_module()
        if calibration is not None:
            ctx.calibration = calibration.calibration_data(run)
        run.manager.hook.pg_before_quantize(ctx=ctx, state_dict=state)
        quantizer = config.quantizer.build()
        if isinstance(quantizer, CalibratedQuantizer):
            # By name again: a shipped file whose config does not name the module stops here, loudly.
            import_by_name(CALIBRATION_MODULE).calibrate(run, ctx, quantizer)
        t0 = time.perf_counter()
        qtensors, compressor = quantizer.quantize(state), config.compressor.build()
        info = write_artifact(
            run.artifact_path,
            qtensors,
            # The manifest names registry entries (the loader looks them up); log tags may differ.
            quantizer_name=registry.name_of(config.quantizer),
            quantizer_config=config_to_json(config.quantizer),
            compressor=compressor,
            compressor_name=registry.name_of(config.compressor),
            compressor_config=config_to_json(config.compressor),
            extras={
                "arch": registry.name_of(config.model),
                "arch_config": config_to_json(config.model),
                "vocab_size": config.data.vocab_size,
                "harness_version": harness.__version__,
            },
        )
        seconds = time.perf_counter() - t0
        code_bytes = os.path.getsize(run.code_path)
        tag = f"{run.quantizer_tag}+{run.compressor_tag}"
        run.log.log(
            f"Serialized model {tag}: {info.bytes_on_disk} bytes (raw_payload:{info.raw_bytes} "
            f"ratio:{info.raw_bytes / max(info.bytes_on_disk, 1):.2f}x time:{seconds:.1f}s)",
            event="artifact",
            bytes_model=info.bytes_on_disk,
            raw_bytes=info.raw_bytes,
            sha256=info.sha256,
        )
        run.log.log(f"Code size: {code_bytes} bytes")
        run.log.log(f"Total submission size {tag}: {info.bytes_on_disk + code_bytes} bytes")
        _log_entropy(
            run,
            ctx,
            qtensors,
            info.bytes_on_disk,
            compressor.coded_class_bytes() if isinstance(compressor, LayoutAwareCompressor) else None,
        )
    barrier(run.dist)


def _calibration_module() -> ModuleType | None:
    """`harness.pipeline.calibration`, or None in a shipped file whose configuration does not name
    it (then no plugin and no quantizer of the run reads calibration batches)."""
    try:
        return import_by_name(CALIBRATION_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != CALIBRATION_MODULE:
            raise
        return None


def _log_entropy(
    run: RunState, ctx: TrainContext, qtensors: dict, bytes_on_disk: int, coded: dict[str, int] | None
) -> None:
    """Order-0 bound of the written symbols per class vs the file's size (kept for the report);
    ``coded``: the bytes per class a layout-aware coder reports."""
    entropy = unshipped_module("entropy")
    if entropy is None:
        run.log.log(skipped_line("entropy"))
        return
    rep = entropy.entropy_report(qtensors, bytes_on_disk)
    lines = rep.log_lines(coded)
    for line in lines[:-1]:
        run.log.log(line)
    record = rep.as_record(coded)
    run.log.log(lines[-1], event="entropy", bound_bytes=record["bound_bytes"], ratio=record["ratio"])
    run.entropy = record
