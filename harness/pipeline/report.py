"""Run phase 5, report: the byte budget measured from disk, the validity verdict, the honest
baselines, telemetry, and ``submission.json``. Plugins may add keys, never change the
harness's own.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import time
from typing import Any

import torch

import harness
from harness.api.config_checks import nonrecord_reasons
from harness.api.errors import ConfigError
from harness.pipeline.budget import Budget, measure_budget
from harness.pipeline.eval import EVAL_VERSION, EvalResult
from harness.pipeline.scorer import scoring_window
from harness.pipeline.setup import RunState
from harness.pipeline.shards import (
    file_sha256,
)
from harness.pipeline.submission_json import write_submission_json
from harness.pipeline.trainer import TrainContext, TrainResult
from harness.pipeline.unshipped import skipped_line, unshipped_module

_HARNESS_KEYS_NOTE = "keys the harness owns; pg_report implementations may only add new keys"


def _verdict(run: RunState, budget: Budget, eval_ms: float, eval_stopped: str | None = None) -> list[str]:
    """Reasons the result is invalid (empty when valid), each also logged loudly.

    ``eval_stopped`` is the message of an evaluation stopped at the cap (already logged by
    `_score_artifact`); such a run has no score and is invalid.
    """
    invalid: list[str] = []
    if budget.over_budget:
        invalid.append(f"over budget: {budget.bytes_total} bytes > {budget.limit}")
        run.log.log(
            f"!!! OVER BUDGET: bytes_total:{budget.bytes_total} > limit:{budget.limit} "
            f"by {-budget.headroom} bytes; "
            "the run is marked over_budget (nothing was deleted) !!!"
        )
    cap_ms = 1000.0 * run.config.eval.max_eval_seconds
    if eval_stopped is not None:
        invalid.append(
            f"evaluation stopped at the cap of {run.config.eval.max_eval_seconds:g}s: {eval_stopped}"
        )
    elif eval_ms > cap_ms:
        invalid.append(f"evaluation took {eval_ms / 1000:.1f}s > cap {run.config.eval.max_eval_seconds:.0f}s")
        run.log.log(
            f"!!! EVAL OVER TIME: eval_time:{eval_ms:.0f}ms > cap {cap_ms:.0f}ms; result marked invalid !!!"
        )
    run.log.log(
        f"budget: bytes_code:{budget.bytes_code} bytes_model:{budget.bytes_model} "
        f"bytes_total:{budget.bytes_total} limit:{budget.limit} headroom:{budget.headroom} "
        f"status:{'OVER_BUDGET' if budget.over_budget else 'ok'}",
        event="budget",
        bytes_code=budget.bytes_code,
        bytes_model=budget.bytes_model,
        bytes_total=budget.bytes_total,
    )
    return invalid


def _baselines(run: RunState, roundtrip: EvalResult, shuffled: float) -> dict[str, Any] | None:
    """Model CE next to uniform, unigram and shuffled-context CE (true ln, held-out val);
    None in a bundle that left the baselines out (`harness.pipeline.unshipped`)."""
    baselines = unshipped_module("baselines")
    if baselines is None:
        run.log.log(skipped_line("baselines"))
        return None
    rep = baselines.BaselineReport(
        model_ce=roundtrip.val_loss,
        uniform_ce=baselines.uniform_ce(run.config.data.vocab_size),
        unigram_ce=run.unigram_ce,
        shuffled_ce=shuffled,
        shuffle_seed=baselines.DEFAULT_SHUFFLE_SEED,
        unigram_tokens=run.unigram.tokens,
    )
    run.log.log(rep.log_line(), event="baselines", **rep.as_record())
    alert = rep.alert_line()
    # A roundtrip stopped at the eval cap has no model CE: the run is already invalid for
    # that, and "does not beat the baselines" would misname the cause.
    if alert is not None and math.isfinite(roundtrip.val_loss):
        run.log.log(alert)
    return rep.as_record()


def _telemetry(run: RunState, ctx: TrainContext, res: TrainResult, device: str) -> dict[str, Any] | None:
    """GPU samples (n/a on CPU), train tokens/s over the timed steps, and MFU; None in a bundle
    that left telemetry out."""
    telemetry = unshipped_module("telemetry")
    if telemetry is None:
        run.log.log(skipped_line("telemetry"))
        return None
    window = run.config.train.train_seq_len
    flops = telemetry.model_flops_per_token(run.n_params, ctx.model.attention_layers, window, ctx.model.width)
    out = {
        **(run.gpu if run.gpu is not None else telemetry.cpu_telemetry()),
        **telemetry.throughput(
            res.steps,
            run.config.train.train_batch_tokens,
            res.train_time_ms,
            flops,
            device,
            num_devices=run.dist.world_size,
        ),
    }
    run.log.log(telemetry.telemetry_line(out), event="telemetry", **out)
    return out


def report(
    run: RunState, ctx: TrainContext, res: TrainResult, pre: EvalResult, scores: dict[str, Any]
) -> dict[str, Any]:
    """Measure the budget from disk, decide validity, write submission.json."""
    config, dist = run.config, run.dist
    budget = measure_budget(run.code_path, run.artifact_path)
    roundtrip, sliding, ttt = scores["roundtrip"], scores["sliding"], scores.get("ttt")
    headline = ttt or sliding or roundtrip
    invalid = _verdict(run, budget, scores["eval_time_ms"], scores.get("eval_stopped"))
    device = (
        torch.cuda.get_device_name(dist.device)
        if dist.device.type == "cuda"
        else f"cpu ({platform.machine()})"
    )
    window = scoring_window(config)
    on = f"on the {run.quantizer_tag}+{run.compressor_tag} roundtrip"
    score_method = (
        f"sliding_window stride:{config.eval.eval_stride} window:{window} {on}"
        if sliding
        else f"standard seq_len:{config.train.train_seq_len} {on}"
    )
    if ttt:
        score_method = (
            f"score_first_ttt adapter:{scores['ttt_adapter']} chunk_tokens:{config.eval.ttt_chunk_tokens} "
            f"stride:{config.eval.eval_stride} window:{window} {on}"
        )
    record: dict[str, Any] = {
        "name": config.name,
        "author": config.author,
        "github_id": config.github_id,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "track": config.track,
        "protocol": run.protocol,
        "nonrecord_reasons": nonrecord_reasons(config),
        "blurb": config.blurb,
        "run_id": run.run_id,
        "val_bpb": headline.val_bpb,
        "val_loss": headline.val_loss,
        "score_method": score_method,
        "pre_quant_val_bpb": pre.val_bpb,
        "pre_quant_val_loss": pre.val_loss,
        "roundtrip_val_bpb": roundtrip.val_bpb,
        "roundtrip_val_loss": roundtrip.val_loss,
        "sliding_val_bpb": sliding.val_bpb if sliding else None,
        "sliding_val_loss": sliding.val_loss if sliding else None,
        "ttt_val_bpb": ttt.val_bpb if ttt else None,
        "ttt_val_loss": ttt.val_loss if ttt else None,
        "ttt_time_ms": scores.get("ttt_time_ms"),
        "ttt_adapter": scores.get("ttt_adapter"),
        "eval_stride": config.eval.eval_stride if sliding else None,
        "eval_window": window if sliding else None,
        "val_tokens": headline.tokens,
        "val_bytes": headline.bytes,
        "bytes_total": budget.bytes_total,
        "bytes_code": budget.bytes_code,
        "bytes_model": budget.bytes_model,
        "byte_limit": budget.limit,
        "over_budget": budget.over_budget,
        "valid": not invalid,
        "invalid_reasons": invalid,
        "model_params": run.n_params,
        "steps": res.steps,
        "ms_per_step": res.train_time_ms / max(res.steps, 1),
        "train_time_ms": res.train_time_ms,
        "stopped_early": res.stopped_early,
        "eval_time_ms": scores["eval_time_ms"],
        "seed": config.train.seed,
        "world_size": dist.world_size,
        "grad_accum_steps": run.accum,
        "train_batch_tokens": config.train.train_batch_tokens,
        "train_seq_len": config.train.train_seq_len,
        "device": device,
        "quantizer": run.quantizer_tag,
        "compressor": run.compressor_tag,
        "dataset_sha256": run.fingerprint["dataset_sha256"],
        "tokenizer_sha256": run.fingerprint["tokenizer_sha256"],
        "artifact_file": run.artifact_path.name,
        "code_file": run.code_path.name,
        "artifact_sha256": file_sha256(run.artifact_path),
        "code_sha256": file_sha256(run.code_path),
        "harness_version": harness.__version__,
        "eval_version": EVAL_VERSION,
        "torch_version": torch.__version__,
        "wall_time_s": round(time.time() - run.wall_start, 1),
    }
    for key, value in (
        ("baselines", _baselines(run, roundtrip, scores["shuffled_ce"])),
        ("telemetry", _telemetry(run, ctx, res, device)),
    ):
        if value is not None:  # left out, not null, where a bundle did not ship the phase
            record[key] = value
    if run.entropy is not None:  # absent in eval-only runs, which write no artifact
        record["entropy"] = run.entropy
    extra: dict[str, Any] = {}
    run.manager.hook.pg_report(ctx=ctx, record=extra)
    clash = sorted(set(extra) & set(record))
    if clash:
        raise ConfigError(f"a pg_report plugin tried to set {', '.join(clash)}: {_HARNESS_KEYS_NOTE}")
    record.update(extra)
    write_submission_json(run.run_dir / "submission.json", record)
    run.log.log(
        f"submission:{run.run_dir / 'submission.json'} val_bpb:{headline.val_bpb:.8f} valid:{not invalid}",
        event="done",
        val_bpb=headline.val_bpb,
        valid=not invalid,
    )
    return record
