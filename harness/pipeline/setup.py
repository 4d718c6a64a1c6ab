"""Run phase 1, setup: the run folder, header lines, shipped code, resolved config and data.

`RunState` is what one run has established so far; every later phase reads and extends it.
The data step resolves the dataset (the built-in default one is built by rank 0 on first
use in a run from the repository, and found prepared by a shipped bundle), builds the byte
tables and the validation tokens, and fingerprints both, as the upstream baseline's preamble
does (docs/protocol.md).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import random
import re
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api import config as cfgmod
from harness.api.config import RunConfig
from harness.api.config_checks import nonrecord_reasons
from harness.api.errors import ConfigError, DataNotPrepared
from harness.api.fileio import write_atomic
from harness.pipeline.bpb import build_byte_luts, tokenizer_sha256
from harness.pipeline.distributed import (
    DistInfo,
    barrier,
    broadcast_str,
)
from harness.pipeline.plugin_manager import PluginManager
from harness.pipeline.prepared_data import cache_root, dataset_builder, find_prepared
from harness.pipeline.runlog import RunLogger
from harness.pipeline.scorer import Scorer
from harness.pipeline.shards import (
    dataset_fingerprint,
    list_shards,
    load_validation_tokens,
)
from harness.pipeline.unshipped import unshipped_module


@dataclass(frozen=True)
class DataPaths:
    """The dataset a run uses and how it is fingerprinted."""

    data_path: Path
    tokenizer_path: Path
    builtin: bool


def autocast_dtype_for(device: torch.device) -> torch.dtype:
    """bf16 where supported, else fp16 (PR #560's portability rule); bf16 on CPU."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def new_run_id() -> str:
    """A fresh run id: the UTC time and 6 random hex digits (``20261201T120000Z_1a2b3c``)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{uuid.uuid4().hex[:6]}"


RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
"""A run id is a plain folder name: no separator, no leading dot, at most 128 characters."""


def check_run_id(run_id: str, source: str = "--run-id") -> str:
    """``run_id`` when it is a plain name (so the run folder stays under ``runs/``), else ConfigError."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise ConfigError(
            f"{source} {run_id!r}: a run id must be a plain folder name matching {RUN_ID_PATTERN.pattern} "
            "(no path separators, no leading dot); the run folder is always runs/<run_id>"
        )
    return run_id


NOT_REPLAYED: tuple[str, ...] = ("train.checkpoint_every_minutes", "train.stop_after_step")
"""Keys that say how a run is operated, not what it computes: the shipped bundle does not record
them (replaying a finished run must not stop at ``stop_after_step``); a resume may change them."""


def recorded_overrides() -> dict[str, str]:
    """The overrides the running bundle recorded from the run that shipped it (empty outside a bundle)."""
    marker = getattr(sys.modules.get("__main__"), "__pgolf_bundle__", None)
    recorded = marker.get("overrides") if isinstance(marker, dict) else None
    return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}


def replay_overrides(
    recorded: Mapping[str, str], environ: Mapping[str, str], sets: Mapping[str, Any]
) -> dict[str, str]:
    """What the shipped ``train_gpt.py`` records so that running it alone replays this run: the
    overrides it already carried, the upstream environment variables, then ``--set``, as strings
    (resolved again the same way on replay), without the `NOT_REPLAYED` keys."""
    merged = {**recorded, **cfgmod.env_overrides(environ), **{k: str(v) for k, v in sets.items()}}
    return {k: v for k, v in sorted(merged.items()) if k not in NOT_REPLAYED}


def submission_dir_of_main() -> Path:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file:
        raise ConfigError("cannot tell which submission is running: pass submission_dir to run()")
    return Path(main_file).resolve().parent


NONRECORD_SUFFIX = "_nonrecord"
"""Added to ``protocol`` (``full_nonrecord``, ``smoke_nonrecord``) when the run is not scored by
the record protocol (`harness.api.config_checks.nonrecord_reasons`), so no table ranks it with
record-protocol runs; ``nonrecord_reasons`` in ``submission.json`` says why."""


def ship_code(
    run_dir: Path,
    submission_dir: Path,
    config: RunConfig,
    log: RunLogger,
    overrides: Mapping[str, str] | None = None,
) -> Path:
    """Put the code that counts into the run folder: this bundle itself, or a fresh bundle that
    records ``overrides`` (`replay_overrides`), so that running it alone replays this run."""
    target = run_dir / "train_gpt.py"
    main = sys.modules.get("__main__")
    if getattr(main, "__pgolf_bundle__", None) is not None:
        write_atomic(target, Path(main.__file__).read_bytes())
        log.log(f"code:bundle_self source:{main.__file__}")
        extra = {k: v for k, v in (overrides or {}).items() if recorded_overrides().get(k) != v}
        if extra:  # a bundle ships itself unchanged; say what a replay of it would not repeat
            log.log(
                "code:bundle_self not recorded in the shipped file: "
                + " ".join(f"{k}={v}" for k, v in extra.items())
            )
        return target
    # Imported by name so the bundler's import scan leaves it out of every bundle: a
    # bundle ships itself and never needs the bundler (saves its bytes in every submission).
    for line in importlib.import_module("harness.tools.run_code").bundle_run(
        submission_dir, run_dir, config, overrides
    ):
        log.log(line)
    return target


def checkpoint_module() -> Any:
    """`harness.pipeline.resume` (with the checkpoint format of `harness.pipeline.checkpoint`),
    imported by name only when a run checkpoints or resumes.

    Like the bundler, it stays out of every bundle's import scan: a record run never
    checkpoints, and their ~36 KB of source would be counted in every submission's code bytes.
    A bundle asked to checkpoint or resume says so instead of failing on a missing module.
    """
    try:
        return importlib.import_module("harness.pipeline.resume")
    except ModuleNotFoundError:
        raise ConfigError(
            "checkpointing and --resume need harness/pipeline/resume.py and checkpoint.py, which "
            "bundles leave out to save code bytes: run the submission from the repository "
            "(harness/run.py or pgolf run)"
        ) from None


def _resolve_data(config: RunConfig, dist: DistInfo, log: RunLogger) -> DataPaths:
    """The configured dataset, or the built-in default one (built by rank 0 on first use)."""
    if config.data.data_path:
        data_path = Path(config.data.data_path)
        if not config.data.tokenizer_path:
            raise ConfigError(
                f"data.data_path={data_path} is set but data.tokenizer_path (TOKENIZER_PATH) is not"
            )
        tok = Path(config.data.tokenizer_path)
        if not tok.is_file():
            raise ConfigError(f"tokenizer file {tok} (data.tokenizer_path) does not exist")
        return DataPaths(data_path, tok, builtin=False)
    variant = config.data.default_variant
    builder = dataset_builder()
    if builder is None:  # a shipped bundle: the data is prepared beforehand, never built here
        ds = find_prepared(variant)
        if ds is None:
            raise DataNotPrepared(
                f"the built-in default dataset (data.default_variant={variant!r}) is not prepared under "
                f"{cache_root()}: prepare it with `pgolf data build-default --variant {variant}` (data "
                "preparation is not counted code, as upstream's data scripts are not), or set DATA_PATH "
                "and TOKENIZER_PATH"
            )
    else:
        if dist.is_main:
            builder.ensure_default_dataset(progress=True, variant=variant)
        barrier(dist)
        ds = builder.ensure_default_dataset(progress=False, variant=variant)
    if ds.manifest.get("vocab_size", config.data.vocab_size) != config.data.vocab_size:
        raise ConfigError(
            f"data.vocab_size={config.data.vocab_size}, but the built-in default dataset "
            f"data.default_variant={variant!r} has vocabulary {ds.manifest['vocab_size']}: choose the "
            "variant of your vocabulary ('sp1024': 1024, 'sp8192': 8192, 'bytes': 256)"
        )
    tok = Path(config.data.tokenizer_path) if config.data.tokenizer_path else ds.tokenizer_path
    log.log(f"dataset:builtin_default path:{ds.data_path}")
    return DataPaths(ds.data_path, tok, builtin=True)


def prepare_run_dir(submission_dir: Path, run_id: str | None, dist: DistInfo) -> tuple[str, Path]:
    """A new run's id and folder, ``<submission_dir>/runs/<run_id>``, created by rank 0 (never
    reused); a resumed run's come from `harness.pipeline.resume.resume_run_dir`."""
    source = "--run-id" if run_id else "RUN_ID"
    rid = run_id or os.environ.get("RUN_ID") or new_run_id()
    rid = broadcast_str(check_run_id(rid, source), dist)
    run_dir = submission_dir / "runs" / rid
    if dist.is_main:
        if run_dir.exists():
            raise ConfigError(
                f"run folder {run_dir} already exists; choose another RUN_ID (nothing was overwritten)"
            )
        run_dir.mkdir(parents=True)
    barrier(dist)
    return rid, run_dir


def _header_lines(
    config: RunConfig, dist: DistInfo, autocast: torch.dtype, log: RunLogger, accum: int
) -> None:
    if dist.device.type == "cuda":
        log.log(
            f"device:cuda name:{torch.cuda.get_device_name(dist.device)} "
            f"world_size:{dist.world_size} backend:{dist.backend or 'none'}"
        )
    else:
        log.log(
            f"device:cpu no CUDA device found: running the CPU smoke profile (protocol: smoke) "
            f"world_size:{dist.world_size} backend:{dist.backend or 'none'} threads:{torch.get_num_threads()}"
        )
    log.log(
        f"amp_dtype:{str(autocast).replace('torch.', '')} torch:{torch.__version__} "
        f"python:{platform.python_version()}"
    )
    log.log(
        f"train_batch_tokens:{config.train.train_batch_tokens} train_seq_len:{config.train.train_seq_len} "
        f"grad_accum_steps:{accum} iterations:{config.train.iterations} "
        f"warmup_steps:{config.train.warmup_steps} "
        f"max_wallclock_seconds:{config.train.max_wallclock_seconds:.3f} seed:{config.train.seed}"
    )
    log.log(f"config:{cfgmod.dumps(config)}")


@dataclass
class RunState:
    """What one run has established so far; each phase below reads and extends it."""

    config: RunConfig
    dist: DistInfo
    manager: PluginManager
    log: RunLogger
    run_id: str
    run_dir: Path
    autocast: torch.dtype
    accum: int
    wall_start: float = field(default_factory=time.time)
    code_path: Path | None = None
    data: DataPaths | None = None
    fingerprint: dict[str, str] = field(default_factory=dict)
    protocol: str = "smoke"
    n_params: int = 0
    artifact_path: Path | None = None
    quantizer_tag: str = ""
    compressor_tag: str = ""
    unigram: Any = None
    unigram_ce: float = float("nan")
    overrides: dict[str, str] = field(default_factory=dict)
    """What the shipped ``train_gpt.py`` records (`replay_overrides`)."""
    gpu: dict[str, Any] | None = None
    """The GPU sampler's summary (None: no sampler ran; the report then says "n/a")."""
    entropy: dict[str, Any] | None = None
    """The export's entropy report, for ``submission.json``."""


def start(run: RunState, submission_dir: Path) -> None:
    """Header lines, the shipped code and the resolved config, written before anything heavy."""
    _header_lines(run.config, run.dist, run.autocast, run.log, run.accum)
    run.log.log(f"run_id:{run.run_id} run_dir:{run.run_dir}", event="start", run_id=run.run_id)
    run.code_path = run.run_dir / "train_gpt.py"
    if run.dist.is_main:
        ship_code(run.run_dir, submission_dir, run.config, run.log, run.overrides)
        write_atomic(run.run_dir / "config.json", (cfgmod.dumps(run.config) + "\n").encode("utf-8"))
    barrier(run.dist)


def load_data(run: RunState) -> Scorer:
    """Resolve the dataset, build the byte tables and validation tokens, fingerprint them, and
    refuse a tokenizer or vocab_size the shards were not made with (`data_binding`)."""
    config = run.config
    run.data = _resolve_data(config, run.dist, run.log)
    luts = build_byte_luts(run.data.tokenizer_path, config.data.vocab_size)
    val_tokens = load_validation_tokens(
        run.data.data_path,
        config.train.train_seq_len,
        config.data.vocab_size,
        max_targets=config.eval.val_max_tokens,
    )
    val_shards = list_shards(run.data.data_path, "val")
    run.fingerprint = {
        "dataset_sha256": dataset_fingerprint(val_shards),
        "tokenizer_sha256": tokenizer_sha256(run.data.tokenizer_path),
    }
    check = unshipped_module("data_binding")
    tok = (run.data.tokenizer_path, run.fingerprint["tokenizer_sha256"], config.data.vocab_size)
    binding = check.check_data_binding(run.data.data_path, *tok) if check else "binding:skipped (not shipped)"
    full = run.dist.device.type == "cuda" and not run.data.builtin and config.eval.val_max_tokens == 0
    run.protocol = "full" if full else "smoke"
    for reason in nonrecord_reasons(config):  # labelled apart: never ranked with record-protocol runs
        run.protocol = f"{run.protocol}{NONRECORD_SUFFIX}"
        run.log.log(f"!!! NON-RECORD PROTOCOL: {reason}; this run is labelled protocol:{run.protocol} !!!")
    run.log.log(
        f"val_tokens:{val_tokens.numel() - 1} val_shards:{len(val_shards)} protocol:{run.protocol} "
        f"dataset_sha256:{run.fingerprint['dataset_sha256'][:16]} "
        f"tokenizer_sha256:{run.fingerprint['tokenizer_sha256'][:16]} {binding}",
        event="data",
        data_path=str(run.data.data_path),
        val_tokens=val_tokens.numel() - 1,
        protocol=run.protocol,
        **run.fingerprint,
    )
    baselines = unshipped_module("baselines")
    if run.dist.is_main and baselines is not None:  # the unigram baseline: training split frequencies
        run.unigram = baselines.train_unigram(run.data.data_path, config.data.vocab_size)
        run.unigram_ce = baselines.unigram_ce(run.unigram.probs, val_tokens)
    return Scorer(config, run.dist, luts, val_tokens, run.autocast, run.accum)
