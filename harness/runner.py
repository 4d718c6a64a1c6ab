"""One run of a submission, end to end: train -> export -> reload from disk -> score -> report.

The order and the rules follow the upstream baseline (PROTOCOL.md §4.1): training under
the wallclock cap, a pre-quantization validation, quantize + compress into an artifact
file, every rank reads the artifact back from disk and evaluates the dequantized model
(standard, then the sliding window at stride 64), and the byte budget is measured from the
shipped files. Everything that decides the score lives here and in `harness.eval`,
`harness.bpb` and `harness.budget`; plugins only supply components and observe.

Outputs, in ``<submission>/runs/<run_id>/``: ``train.log``, ``metrics.jsonl``, the bundled
``train_gpt.py`` whose bytes are counted, the artifact, ``config.json`` and
``submission.json``.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import inspect
import math
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from harness import config as cfgmod
from harness.artifact import config_to_json, load_state_dict, write_artifact
from harness.baselines import (
    DEFAULT_SHUFFLE_SEED,
    BaselineReport,
    shuffled_context_ce,
    train_unigram,
    uniform_ce,
    unigram_ce,
)
from harness.bpb import build_byte_luts, tokenizer_sha256
from harness.budget import Budget, measure_budget
from harness.config import RunConfig
from harness.data import (
    DistributedTokenLoader,
    dataset_fingerprint,
    file_sha256,
    list_shards,
    load_validation_tokens,
)
from harness.distributed import (
    DistInfo,
    already_reported,
    barrier,
    broadcast_str,
    init_distributed,
    report_rank_failure,
    shutdown,
)
from harness.entropy import entropy_report
from harness.errors import ConfigError, EvalTimeLimit, PgolfError, TrainingInterrupted
from harness.eval import EVAL_VERSION, EvalResult
from harness.fileio import write_atomic
from harness.manager import PluginManager, run_manager
from harness.report import write_submission_json
from harness.runlog import RunLogger
from harness.scoring import Scorer, fmt_scores, scoring_window
from harness.telemetry import (
    GpuSampler,
    cpu_telemetry,
    model_flops_per_token,
    nvml_device_for,
    telemetry_line,
    throughput,
)
from harness.train import TrainContext, Trainer, TrainResult, grad_accum_steps


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


def _new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{uuid.uuid4().hex[:6]}"


def _submission_dir_of_main() -> Path:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file:
        raise ConfigError("cannot tell which submission is running: pass submission_dir to run()")
    return Path(main_file).resolve().parent


def _ship_code(run_dir: Path, submission_dir: Path, compress: bool, log: RunLogger) -> Path:
    """Put the code that counts into the run folder: this bundle itself, or a fresh bundle."""
    target = run_dir / "train_gpt.py"
    main = sys.modules.get("__main__")
    if getattr(main, "__pgolf_bundle__", None) is not None:
        write_atomic(target, Path(main.__file__).read_bytes())
        log.log(f"code:bundle_self source:{main.__file__}")
        return target
    # Imported by name so the bundler's import scan leaves it out of every bundle: a
    # bundle ships itself and never needs the bundler (saves its bytes in every submission).
    bundler = importlib.import_module("harness.bundle")
    if compress:  # the readable twin is for reviewers; only train_gpt.py ships and counts
        readable = bundler.bundle_submission(submission_dir, run_dir / "train_gpt_readable.py")
        log.log(f"code:readable modules:{len(readable.modules)} lines:{readable.lines} bytes:{readable.bytes}")
    info = bundler.bundle_submission(submission_dir, target, compress=compress)
    log.log(f"code:bundled compress:{compress} modules:{len(info.modules)} lines:{info.lines} bytes:{info.bytes}")
    return target


def _checkpoint_module() -> Any:
    """`harness.checkpoint`, imported by name only when a run checkpoints or resumes.

    Like the bundler, it stays out of every bundle's import scan: a record run never
    checkpoints, and its ~23 KB of source would be counted in every submission's code bytes.
    A bundle asked to checkpoint says so instead of failing on a missing module.
    """
    try:
        return importlib.import_module("harness.checkpoint")
    except ModuleNotFoundError:
        raise ConfigError(
            "checkpointing and --resume need harness/checkpoint.py, which bundles leave out to save "
            "code bytes: run the submission from the repository (harness/run.py or pgolf run)"
        ) from None


def _resolve_data(config: RunConfig, dist: DistInfo, log: RunLogger) -> DataPaths:
    """The configured dataset, or the built-in default one (built by rank 0 on first use)."""
    if config.data.data_path:
        data_path = Path(config.data.data_path)
        if not config.data.tokenizer_path:
            raise ConfigError(f"data.data_path={data_path} is set but data.tokenizer_path (TOKENIZER_PATH) is not")
        tok = Path(config.data.tokenizer_path)
        if not tok.is_file():
            raise ConfigError(f"tokenizer file {tok} (data.tokenizer_path) does not exist")
        return DataPaths(data_path, tok, builtin=False)
    from harness.default_data import ensure_default_dataset

    variant = config.data.default_variant
    if dist.is_main:
        ensure_default_dataset(progress=True, variant=variant)
    barrier(dist)
    ds = ensure_default_dataset(progress=False, variant=variant)
    tok = Path(config.data.tokenizer_path) if config.data.tokenizer_path else ds.tokenizer_path
    log.log(f"dataset:builtin_default path:{ds.data_path}")
    return DataPaths(ds.data_path, tok, builtin=True)


def _prepare_run_dir(submission_dir: Path, run_id: str | None, dist: DistInfo, resume: Path | None = None) -> tuple[str, Path]:
    if resume is not None:
        return _resume_run_dir(Path(resume), run_id)
    rid = run_id or os.environ.get("RUN_ID") or _new_run_id()
    rid = broadcast_str(rid, dist)
    run_dir = submission_dir / "runs" / rid
    if dist.is_main:
        if run_dir.exists():
            raise ConfigError(f"run folder {run_dir} already exists; choose another RUN_ID (nothing was overwritten)")
        run_dir.mkdir(parents=True)
    barrier(dist)
    return rid, run_dir


def _resume_run_dir(run_dir: Path, run_id: str | None) -> tuple[str, Path]:
    """The interrupted run's own folder and id (``--resume RUN_DIR``); checked on every rank."""
    run_dir = run_dir.resolve()
    if (run_dir / "submission.json").exists():
        raise ConfigError(f"--resume {run_dir}: the run already finished (submission.json exists); nothing to resume")
    name = _checkpoint_module().CHECKPOINT_NAME
    if not (run_dir / name).is_file():
        raise ConfigError(f"--resume {run_dir}: no {name} there (the run must have had train.checkpoint_every_minutes > 0)")
    exported = sorted(run_dir.glob("*.pgolf"))
    if exported:
        raise ConfigError(f"--resume {run_dir}: training already finished and exported {exported[0].name}; score it with `pgolf rescore {run_dir}`")
    if run_id is not None and run_id != run_dir.name:
        raise ConfigError(f"--resume {run_dir} continues run {run_dir.name}; --run-id {run_id} names another run")
    return run_dir.name, run_dir


def _header_lines(config: RunConfig, dist: DistInfo, autocast: torch.dtype, log: RunLogger, accum: int) -> None:
    if dist.device.type == "cuda":
        log.log(f"device:cuda name:{torch.cuda.get_device_name(dist.device)} world_size:{dist.world_size} backend:{dist.backend or 'none'}")
    else:
        log.log(
            f"device:cpu no CUDA device found: running the CPU smoke profile (protocol: smoke) "
            f"world_size:{dist.world_size} backend:{dist.backend or 'none'} threads:{torch.get_num_threads()}"
        )
    log.log(f"amp_dtype:{str(autocast).replace('torch.', '')} torch:{torch.__version__} python:{platform.python_version()}")
    log.log(
        f"train_batch_tokens:{config.train.train_batch_tokens} train_seq_len:{config.train.train_seq_len} "
        f"grad_accum_steps:{accum} iterations:{config.train.iterations} warmup_steps:{config.train.warmup_steps} "
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
    qname: str = ""
    cname: str = ""
    unigram: Any = None
    unigram_ce: float = float("nan")
    gpu: dict[str, Any] = field(default_factory=cpu_telemetry)


def run(
    config: RunConfig,
    *,
    submission_dir: Path | None = None,
    sets: Mapping[str, str] | None = None,
    run_id: str | None = None,
    resume: Path | None = None,
) -> dict[str, Any] | None:
    """Run ``config`` end to end; returns the submission record on rank 0 (None elsewhere,
    and None when ``train.stop_after_step`` interrupted training).

    ``submission_dir`` defaults to the folder of the running ``__main__`` file; the run
    writes into ``<submission_dir>/runs/<run_id>/`` (``run_id`` defaults to ``RUN_ID`` or a
    timestamp). ``sets`` are ``--set`` overrides (``{"train.iterations": "50"}``). ``resume``
    is the folder of an interrupted run holding ``checkpoint.pgck``: training continues there
    from the checkpoint (same resolved config required) and the run finishes as usual.

    Called from a script's ``__main__`` without ``submission_dir`` (a submission file or its
    bundle run directly), the script's own command line may carry the same ``--set KEY=VALUE``
    and ``--run-id ID`` flags as ``harness/run.py``.
    """
    if submission_dir is None:
        try:
            argv_sets, argv_run_id, argv_resume = _script_flags(sys.argv[1:])
            return _run_and_shutdown(config, None, {**argv_sets, **(sets or {})}, run_id or argv_run_id, resume or argv_resume)
        except PgolfError as exc:  # a script prints one clear line, as harness/run.py does
            if not already_reported(exc):
                print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    return _run_and_shutdown(config, submission_dir, sets, run_id, resume)


def _run_and_shutdown(config: RunConfig, submission_dir: Path | None, sets: Mapping[str, str] | None, run_id: str | None, resume: Path | None = None) -> dict[str, Any] | None:
    dist = init_distributed()
    finished = False
    try:
        record = _run(config, dist, Path(submission_dir or _submission_dir_of_main()), dict(sets or {}), run_id, resume)
        finished = True
        return record
    except BaseException as exc:
        # The peers of a failed rank then fail on the broken group; this line names the cause.
        report_rank_failure(dist, exc)
        raise
    finally:
        shutdown(dist, finished=finished)


def _script_flags(argv: list[str]) -> tuple[dict[str, str], str | None, Path | None]:
    """``--set KEY=VALUE`` (repeatable), ``--run-id ID`` and ``--resume RUN_DIR`` from a
    submission script's argv (the same flags as ``harness/run.py``)."""
    import argparse

    parser = argparse.ArgumentParser(prog=Path(sys.argv[0]).name, description="Run this submission.")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR")
    args = parser.parse_args(argv)
    return cfgmod.parse_set_args(args.sets), args.run_id, args.resume


def _run(config: RunConfig, dist: DistInfo, submission_dir: Path, sets: dict[str, str], run_id: str | None, resume: Path | None = None) -> dict[str, Any] | None:
    if dist.device.type == "cuda":  # TF32 matmuls, as every upstream script enables
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = cfgmod.resolve(config, cuda=dist.device.type == "cuda", environ=os.environ, sets=sets)
    manager = run_manager(cfgmod.component_modules(config))
    manager.hook.pg_configure(run=config)
    rid, run_dir = _prepare_run_dir(submission_dir, run_id, dist, resume)
    if resume is not None:  # refuse a mismatched resume before anything in the folder changes
        _checkpoint_module().check_resume_dir(run_dir, config, dist.world_size)
    log = RunLogger(run_dir, dist.rank)
    st = RunState(config, dist, manager, log, rid, run_dir, autocast_dtype_for(dist.device), grad_accum_steps(config, dist.world_size))
    try:
        _start(st, submission_dir)
        scorer = _load_data(st)
        ctx, result = _load_trained(st) if config.train.load_model_path else _train(st, scorer, resume is not None)
        # Pre-quantization score of the weights that will be exported (after any averaging swap).
        pre = scorer.standard(ctx.model)
        log.log(f"final_prequant {fmt_scores(pre, True)}", event="prequant", val_loss=pre.val_loss, val_bpb=pre.val_bpb)
        _ship_existing_artifact(st) if config.train.load_model_path else _export(st, ctx)
        scores = _score_artifact(st, scorer)
        return _report(st, ctx, result, pre, scores) if dist.is_main else None
    except TrainingInterrupted:  # on purpose (train.stop_after_step): not an error
        return None
    except PgolfError as exc:
        log.event("error", kind=type(exc).__name__, message=str(exc))
        raise
    finally:
        log.close()


def _start(st: RunState, submission_dir: Path) -> None:
    """Header lines, the shipped code and the resolved config, written before anything heavy."""
    _header_lines(st.config, st.dist, st.autocast, st.log, st.accum)
    st.log.log(f"run_id:{st.run_id} run_dir:{st.run_dir}", event="start", run_id=st.run_id)
    st.code_path = st.run_dir / "train_gpt.py"
    if st.dist.is_main:
        _ship_code(st.run_dir, submission_dir, st.config.compress_code, st.log)
        write_atomic(st.run_dir / "config.json", (cfgmod.dumps(st.config) + "\n").encode("utf-8"))
    barrier(st.dist)


def _load_data(st: RunState) -> Scorer:
    """Resolve the dataset, build the byte tables and validation tokens, fingerprint them."""
    config = st.config
    st.data = _resolve_data(config, st.dist, st.log)
    luts = build_byte_luts(st.data.tokenizer_path, config.data.vocab_size)
    val_tokens = load_validation_tokens(
        st.data.data_path, config.train.train_seq_len, config.data.vocab_size, max_targets=config.eval.val_max_tokens
    )
    val_shards = list_shards(st.data.data_path, "val")
    st.fingerprint = {
        "dataset_sha256": dataset_fingerprint(val_shards),
        "tokenizer_sha256": tokenizer_sha256(st.data.tokenizer_path),
    }
    full = st.dist.device.type == "cuda" and not st.data.builtin and config.eval.val_max_tokens == 0
    st.protocol = "full" if full else "smoke"
    st.log.log(
        f"val_tokens:{val_tokens.numel() - 1} val_shards:{len(val_shards)} protocol:{st.protocol} "
        f"dataset_sha256:{st.fingerprint['dataset_sha256'][:16]} tokenizer_sha256:{st.fingerprint['tokenizer_sha256'][:16]}",
        event="data", data_path=str(st.data.data_path), val_tokens=val_tokens.numel() - 1, protocol=st.protocol, **st.fingerprint,
    )
    if st.dist.is_main:  # the unigram baseline: token frequencies of the training split
        st.unigram = train_unigram(st.data.data_path, config.data.vocab_size)
        st.unigram_ce = unigram_ce(st.unigram.probs, val_tokens)
    return Scorer(config, st.dist, luts, val_tokens, st.autocast, st.accum)


def register_observers(manager: PluginManager, config: RunConfig) -> list[Any]:
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
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters else "broadcast_buffers"
        wrapped = DDP(wrapped, device_ids=ids, **{no_sync: False})
    return wrapped


def _describe_model(model: torch.nn.Module, log: RunLogger) -> None:
    """The architecture's own header lines (components, effective depth, attention backend)."""
    describe = getattr(model, "describe", None)
    for line in describe() if callable(describe) else []:
        log.log(line)


def _train(st: RunState, scorer: Scorer, resume: bool = False) -> tuple[TrainContext, TrainResult]:
    """Build the model, optimizers and observers; prime, train, and let plugins finish.

    With checkpoints on (or ``resume``), a `Checkpointer` saves the training state in the
    run folder; ``resume`` restores it after priming and training continues from its step.
    """
    config, dist = st.config, st.dist
    seed_everything(config.train.seed)
    model = config.model.build(config.data.vocab_size).to(dist.device)
    st.n_params = sum(p.numel() for p in model.parameters())
    st.log.log(f"model_params:{st.n_params}", event="model", model_params=st.n_params)
    _describe_model(model, st.log)
    optimizer = config.optimizer.build(model)
    for line in optimizer.describe():
        st.log.log(line)
    observers = register_observers(st.manager, config)
    ctx = TrainContext(config=config, model=model, optimizer=optimizer, log=st.log, dist=dist, autocast_dtype=st.autocast, run_dir=st.run_dir)
    loader = DistributedTokenLoader(st.data.data_path, dist.rank, dist.world_size, dist.device, config.data.vocab_size)

    def validate() -> dict[str, float]:
        r = scorer.standard(model)
        return {"val_loss": r.val_loss, "val_bpb": r.val_bpb}

    # Before compilation and priming, so plugins that attach parametrizations or buffers
    # (late QAT) are compiled in and their switches are tensors, not baked Python flags.
    st.manager.hook.pg_train_start(ctx=ctx)
    wants_ckpt = resume or config.train.checkpoint_every_minutes > 0 or config.train.stop_after_step > 0
    ckpt = _checkpoint_module().Checkpointer(st.run_dir, config, dist, loader=loader, observers=observers) if wants_ckpt else None
    trainer = Trainer(ctx, train_model=wrap_for_training(model, config, dist), loader=loader, validate=validate, hooks=st.manager.hook, checkpointer=ckpt)
    trainer.prime()
    if ckpt is not None and ckpt.stateless:
        st.log.log(f"checkpoint: plugins without checkpoint state (a resume restarts them): {', '.join(ckpt.stateless)}")
    start = ckpt.load(ctx) if resume else None  # after priming, which resets what it touched
    if start is not None:
        st.log.log(f"resume: step:{start['step']} train_time:{start['train_ms']:.0f}ms from {ckpt.path}", event="resume", step=start["step"], train_time_ms=start["train_ms"])
    # NVML sampling on rank 0's GPU over the timed loop only (after compile priming).
    sampler = GpuSampler(nvml_device_for(dist.local_rank)).start() if dist.device.type == "cuda" and dist.is_main else None
    try:
        result = trainer.run(resume=start)
    finally:
        if sampler is not None:
            st.gpu = sampler.stop()
    st.manager.hook.pg_train_end(ctx=ctx)
    return ctx, result


def _source_artifact(path: Path) -> Path:
    """The artifact named by ``train.load_model_path``: a .pgolf file or a run folder holding one."""
    if path.is_dir():
        found = sorted(path.glob("*.pgolf"))
        if len(found) != 1:
            raise ConfigError(f"train.load_model_path={path} holds {len(found)} .pgolf artifacts; expected exactly one")
        return found[0]
    if not path.is_file():
        raise ConfigError(f"train.load_model_path={path} does not exist (expected a .pgolf artifact or a run folder)")
    return path


def _load_trained(st: RunState) -> tuple[TrainContext, TrainResult]:
    """Eval-only: rebuild the model from an existing artifact; no training step runs."""
    config = st.config
    source = _source_artifact(Path(config.train.load_model_path))
    state, manifest = load_state_dict(source, st.manager.registry)
    names = (manifest["quantizer"]["name"], manifest["compressor"]["name"])
    expected = (st.manager.registry.name_of(config.quantizer), st.manager.registry.name_of(config.compressor))
    if names != expected:
        raise ConfigError(f"{source} was written by quantizer/compressor {names}, but this submission uses {expected}")
    model = config.model.build(config.data.vocab_size).to(st.dist.device)
    model.load_state_dict(state, strict=True)
    st.n_params = sum(p.numel() for p in model.parameters())
    st.log.log(f"model_params:{st.n_params}", event="model", model_params=st.n_params)
    st.log.log(f"eval_only: loaded {source} (no training)", event="eval_only", source=str(source))
    ctx = TrainContext(config=config, model=model, optimizer=None, log=st.log, dist=st.dist, autocast_dtype=st.autocast, run_dir=st.run_dir)
    return ctx, TrainResult(steps=0, train_time_ms=0.0, stopped_early=False, last_val=None)


def _ship_existing_artifact(st: RunState) -> None:
    """Eval-only: the shipped artifact is the loaded file itself, copied byte for byte."""
    source = _source_artifact(Path(st.config.train.load_model_path))
    st.qname, st.cname = st.config.quantizer.build().name, st.config.compressor.build().name
    st.artifact_path = st.run_dir / f"final_model.{st.qname}.{st.cname}.pgolf"
    if st.dist.is_main:
        write_atomic(st.artifact_path, source.read_bytes(), overwrite=False)
        st.log.log(f"Serialized model {st.qname}+{st.cname}: {os.path.getsize(st.artifact_path)} bytes (copied from {source})")
    barrier(st.dist)


_ENTROPY_KEY = "pgolf_entropy_report"  # ctx.extras slot from _export to _report


def _export(st: RunState, ctx: TrainContext) -> None:
    """Rank 0 quantizes, compresses and writes the artifact; every rank learns its path."""
    config, registry = st.config, st.manager.registry
    # Log tags come from the built components (an "intn" quantizer calls itself int5 or int6).
    st.qname, st.cname = config.quantizer.build().name, config.compressor.build().name
    st.artifact_path = st.run_dir / f"final_model.{st.qname}.{st.cname}.pgolf"
    if st.dist.is_main:
        state = {k: v.detach().to("cpu").clone() for k, v in ctx.model.state_dict().items()}
        st.manager.hook.pg_before_quantize(ctx=ctx, state_dict=state)
        t0 = time.perf_counter()
        qtensors, compressor = config.quantizer.build().quantize(state), config.compressor.build()
        info = write_artifact(
            st.artifact_path, qtensors,
            # The manifest names registry entries (the loader looks them up); log tags may differ.
            quantizer_name=registry.name_of(config.quantizer), quantizer_config=config_to_json(config.quantizer),
            compressor=compressor, compressor_name=registry.name_of(config.compressor),
            compressor_config=config_to_json(config.compressor),
            extras={
                "arch": registry.name_of(config.model),
                "arch_config": config_to_json(config.model),
                "vocab_size": config.data.vocab_size,
                "harness_version": harness.__version__,
            },
        )
        seconds = time.perf_counter() - t0
        code_bytes = os.path.getsize(st.code_path)
        tag = f"{st.qname}+{st.cname}"
        st.log.log(
            f"Serialized model {tag}: {info.bytes_on_disk} bytes (raw_payload:{info.raw_bytes} "
            f"ratio:{info.raw_bytes / max(info.bytes_on_disk, 1):.2f}x time:{seconds:.1f}s)",
            event="artifact", bytes_model=info.bytes_on_disk, raw_bytes=info.raw_bytes, sha256=info.sha256,
        )
        st.log.log(f"Code size: {code_bytes} bytes")
        st.log.log(f"Total submission size {tag}: {info.bytes_on_disk + code_bytes} bytes")
        _log_entropy(st, ctx, qtensors, info.bytes_on_disk, getattr(compressor, "coded_bytes", None))
    barrier(st.dist)


def _log_entropy(st: RunState, ctx: TrainContext, qtensors: dict, bytes_on_disk: int, coded: Any) -> None:
    """Order-0 bound of the written symbols per class vs the file's size (kept for _report)."""
    rep = entropy_report(qtensors, bytes_on_disk)
    coded = coded if isinstance(coded, dict) else None  # per-class bytes only an entropy coder knows
    lines = rep.log_lines(coded)
    for line in lines[:-1]:
        st.log.log(line)
    record = rep.as_record(coded)
    st.log.log(lines[-1], event="entropy", bound_bytes=record["bound_bytes"], ratio=record["ratio"])
    ctx.extras[_ENTROPY_KEY] = record


def _unscored(mode: str, stride: int | None, window: int) -> EvalResult:
    """An evaluation stopped at the cap: no tokens, so its loss and BPB read NaN (null in JSON)."""
    return EvalResult(loss_sum=float("nan"), tokens=0, bytes=0, elapsed_s=0.0, mode=mode, stride=stride, window=window)


def _eval_stopped(st: RunState, scores: dict[str, Any], exc: EvalTimeLimit, skipped: list[str]) -> None:
    cap = st.config.eval.max_eval_seconds
    st.log.log(
        f"!!! EVAL OVER TIME: {exc}; cap {cap:g}s; skipped: {', '.join(skipped) or 'nothing'}; "
        "no score is reported and the result is marked invalid !!!",
        event="eval_over_time", message=str(exc), cap_s=cap, skipped=skipped,
    )
    scores["eval_stopped"] = str(exc)


def _score_artifact(st: RunState, scorer: Scorer) -> dict[str, Any]:
    """Every rank reads the artifact back from disk, rebuilds the model and scores it.

    The eval clock starts before the artifact is read; ``eval.max_eval_seconds`` from then
    (plus the shuffled baseline's time, which is not scored) is a deadline the evaluations
    check between batches. A pass stopped there scores NaN, the later ones are skipped, and
    ``scores["eval_stopped"]`` says why (the verdict marks the run invalid).
    """
    config, log = st.config, st.log
    t0 = time.perf_counter()
    deadline = t0 + config.eval.max_eval_seconds
    state, _manifest = load_state_dict(st.artifact_path, st.manager.registry)
    model = config.model.build(config.data.vocab_size).to(st.dist.device)
    model.load_state_dict(state, strict=True)
    tag = f"final_{st.qname}_{st.cname}_roundtrip"
    stride, window = config.eval.eval_stride, scorer.window()
    scores: dict[str, Any] = {"roundtrip": None, "sliding": None, "shuffled_ce": float("nan"), "eval_stopped": None}
    try:
        rt = scorer.standard(model, deadline=deadline)
    except EvalTimeLimit as exc:
        scores["roundtrip"] = _unscored("standard", None, config.train.train_seq_len)
        if scorer.sliding_enabled():
            scores["sliding"] = _unscored("sliding", min(stride, window), window)
        _eval_stopped(st, scores, exc, ["shuffled baseline"] + (["sliding_window"] if scorer.sliding_enabled() else []))
        scores["eval_time_ms"] = 1000.0 * (time.perf_counter() - t0)
        return scores
    rt_ms = 1000.0 * (time.perf_counter() - t0)
    log.log(f"{tag} {fmt_scores(rt, False)} eval_time:{rt_ms:.0f}ms", event="roundtrip", val_loss=rt.val_loss, val_bpb=rt.val_bpb, eval_time_ms=rt_ms, tokens=rt.tokens, bytes=rt.bytes)
    log.log(f"{tag}_exact {fmt_scores(rt, True)}")
    scores["roundtrip"] = rt
    # The shuffled-context baseline is not part of the scored evaluation: timed apart.
    t_shuffle = time.perf_counter()
    model.eval()
    scores["shuffled_ce"] = shuffled_context_ce(
        model, scorer.val, seq_len=config.train.train_seq_len, batch_seqs=scorer.batch_seqs, device=st.dist.device,
        autocast_dtype=st.autocast, seed=DEFAULT_SHUFFLE_SEED, rank=st.dist.rank, world_size=st.dist.world_size,
    )
    shuffle_s = time.perf_counter() - t_shuffle
    if scorer.sliding_enabled():
        t1 = time.perf_counter()
        try:
            sw = scorer.sliding(model, deadline=deadline + shuffle_s)
        except EvalTimeLimit as exc:
            scores["sliding"] = _unscored("sliding", min(stride, window), window)
            _eval_stopped(st, scores, exc, [])
        else:
            sw_ms = 1000.0 * (time.perf_counter() - t1)
            head = f"stride:{stride} window:{window}"
            log.log(f"{tag}_sliding_window {head} {fmt_scores(sw, False)} eval_time:{sw_ms:.0f}ms", event="sliding", val_loss=sw.val_loss, val_bpb=sw.val_bpb, eval_time_ms=sw_ms, stride=stride, window=window, tokens=sw.tokens, bytes=sw.bytes)
            log.log(f"{tag}_sliding_window_exact {head} {fmt_scores(sw, True)}")
            scores["sliding"] = sw
    scores["eval_time_ms"] = 1000.0 * (time.perf_counter() - t0 - shuffle_s)
    return scores


_HARNESS_KEYS_NOTE = "keys the harness owns; pg_report implementations may only add new keys"


def _verdict(st: RunState, budget: Budget, eval_ms: float, eval_stopped: str | None = None) -> list[str]:
    """Reasons the result is invalid (empty when valid), each also logged loudly.

    ``eval_stopped`` is the message of an evaluation stopped at the cap (already logged by
    `_score_artifact`); such a run has no score and is invalid.
    """
    invalid: list[str] = []
    if budget.over_budget:
        invalid.append(f"over budget: {budget.bytes_total} bytes > {budget.limit}")
        st.log.log(
            f"!!! OVER BUDGET: bytes_total:{budget.bytes_total} > limit:{budget.limit} by {-budget.headroom} bytes; "
            "the run is marked over_budget (nothing was deleted) !!!"
        )
    cap_ms = 1000.0 * st.config.eval.max_eval_seconds
    if eval_stopped is not None:
        invalid.append(f"evaluation stopped at the cap of {st.config.eval.max_eval_seconds:g}s: {eval_stopped}")
    elif eval_ms > cap_ms:
        invalid.append(f"evaluation took {eval_ms / 1000:.1f}s > cap {st.config.eval.max_eval_seconds:.0f}s")
        st.log.log(f"!!! EVAL OVER TIME: eval_time:{eval_ms:.0f}ms > cap {cap_ms:.0f}ms; result marked invalid !!!")
    st.log.log(
        f"budget: bytes_code:{budget.bytes_code} bytes_model:{budget.bytes_model} bytes_total:{budget.bytes_total} "
        f"limit:{budget.limit} headroom:{budget.headroom} status:{'OVER_BUDGET' if budget.over_budget else 'ok'}",
        event="budget", bytes_code=budget.bytes_code, bytes_model=budget.bytes_model, bytes_total=budget.bytes_total,
    )
    return invalid


def _baselines(st: RunState, rt: EvalResult, shuffled: float) -> dict[str, Any]:
    """Model CE next to uniform, unigram and shuffled-context CE (true ln, held-out val)."""
    rep = BaselineReport(
        model_ce=rt.val_loss, uniform_ce=uniform_ce(st.config.data.vocab_size), unigram_ce=st.unigram_ce,
        shuffled_ce=shuffled, shuffle_seed=DEFAULT_SHUFFLE_SEED, unigram_tokens=st.unigram.tokens,
    )
    st.log.log(rep.log_line(), event="baselines", **rep.as_record())
    alert = rep.alert_line()
    # A roundtrip stopped at the eval cap has no model CE: the run is already invalid for
    # that, and "does not beat the baselines" would misname the cause.
    if alert is not None and math.isfinite(rt.val_loss):
        st.log.log(alert)
    return rep.as_record()


def _telemetry(st: RunState, ctx: TrainContext, res: TrainResult, device: str) -> dict[str, Any]:
    """GPU samples (n/a on CPU), train tokens/s over the timed steps, and MFU."""
    cfg = st.config.model
    layers = getattr(ctx.model, "effective_depth", None) or getattr(cfg, "num_layers", None) or getattr(cfg, "n_layers", 0)
    width = getattr(cfg, "model_dim", None) or getattr(cfg, "d_model", 0)
    window = st.config.train.train_seq_len
    flops = model_flops_per_token(st.n_params, int(layers), window, int(width))
    out = {**st.gpu, **throughput(res.steps, st.config.train.train_batch_tokens, res.train_time_ms, flops, device, num_devices=st.dist.world_size)}
    st.log.log(telemetry_line(out), event="telemetry", **out)
    return out


def _report(st: RunState, ctx: TrainContext, res: TrainResult, pre: EvalResult, scores: dict[str, Any]) -> dict[str, Any]:
    """Measure the budget from disk, decide validity, write submission.json."""
    config, dist = st.config, st.dist
    budget = measure_budget(st.code_path, st.artifact_path)
    rt, sw = scores["roundtrip"], scores["sliding"]
    headline = sw or rt
    invalid = _verdict(st, budget, scores["eval_time_ms"], scores.get("eval_stopped"))
    device = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" else f"cpu ({platform.machine()})"
    window = scoring_window(config)
    on = f"on the {st.qname}+{st.cname} roundtrip"
    score_method = f"sliding_window stride:{config.eval.eval_stride} window:{window} {on}" if sw else f"standard seq_len:{config.train.train_seq_len} {on}"
    record: dict[str, Any] = {
        "name": config.name, "author": config.author, "github_id": config.github_id,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "track": config.track, "protocol": st.protocol, "blurb": config.blurb, "run_id": st.run_id,
        "val_bpb": headline.val_bpb, "val_loss": headline.val_loss, "score_method": score_method,
        "pre_quant_val_bpb": pre.val_bpb, "pre_quant_val_loss": pre.val_loss,
        "roundtrip_val_bpb": rt.val_bpb, "roundtrip_val_loss": rt.val_loss,
        "sliding_val_bpb": sw.val_bpb if sw else None, "sliding_val_loss": sw.val_loss if sw else None,
        "eval_stride": config.eval.eval_stride if sw else None, "eval_window": window if sw else None,
        "val_tokens": headline.tokens, "val_bytes": headline.bytes,
        "bytes_total": budget.bytes_total, "bytes_code": budget.bytes_code, "bytes_model": budget.bytes_model,
        "byte_limit": budget.limit, "over_budget": budget.over_budget,
        "valid": not invalid, "invalid_reasons": invalid,
        "model_params": st.n_params, "steps": res.steps,
        "ms_per_step": res.train_time_ms / max(res.steps, 1), "train_time_ms": res.train_time_ms,
        "stopped_early": res.stopped_early, "eval_time_ms": scores["eval_time_ms"],
        "seed": config.train.seed, "world_size": dist.world_size, "grad_accum_steps": st.accum,
        "train_batch_tokens": config.train.train_batch_tokens, "train_seq_len": config.train.train_seq_len,
        "device": device, "quantizer": st.qname, "compressor": st.cname,
        "dataset_sha256": st.fingerprint["dataset_sha256"], "tokenizer_sha256": st.fingerprint["tokenizer_sha256"],
        "artifact_file": st.artifact_path.name, "code_file": st.code_path.name,
        "artifact_sha256": file_sha256(st.artifact_path), "code_sha256": file_sha256(st.code_path),
        "harness_version": harness.__version__, "eval_version": EVAL_VERSION,
        "torch_version": torch.__version__, "wall_time_s": round(time.time() - st.wall_start, 1),
    }
    record["baselines"] = _baselines(st, rt, scores["shuffled_ce"])
    record["telemetry"] = _telemetry(st, ctx, res, device)
    if _ENTROPY_KEY in ctx.extras:  # absent in eval-only runs, which write no artifact
        record["entropy"] = ctx.extras[_ENTROPY_KEY]
    extra: dict[str, Any] = {}
    st.manager.hook.pg_report(ctx=ctx, record=extra)
    clash = sorted(set(extra) & set(record))
    if clash:
        raise ConfigError(f"a pg_report plugin tried to set {', '.join(clash)}: {_HARNESS_KEYS_NOTE}")
    record.update(extra)
    write_submission_json(st.run_dir / "submission.json", record)
    st.log.log(f"submission:{st.run_dir / 'submission.json'} val_bpb:{headline.val_bpb:.8f} valid:{not invalid}", event="done", val_bpb=headline.val_bpb, valid=not invalid)
    return record
