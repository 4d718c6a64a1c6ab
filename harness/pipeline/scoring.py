"""Run phase 4, scoring: every rank reads the artifact back from disk, rebuilds the model and
scores it (standard evaluation, then the sliding window) under the evaluation cap, as the
upstream baseline's roundtrip does (docs/protocol.md). The shuffled-context baseline runs
between the two passes, timed apart. With an ``eval.adapter`` the score-first TTT walk
(`harness.pipeline.adaptation`, reached by name) runs last, under the same cap, as the
2026-04-09 SP8192 record's ``quantized_ttt`` pass does after its sliding pass.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from harness.api.by_name import ADAPTATION_MODULE
from harness.api.errors import ConfigError, EvalTimeLimit
from harness.pipeline.artifact import load_state_dict
from harness.pipeline.eval import EvalResult
from harness.pipeline.scorer import Scorer, log_score
from harness.pipeline.setup import RunState
from harness.pipeline.unshipped import unshipped_module


def _unscored(mode: str, stride: int | None, window: int) -> EvalResult:
    """An evaluation stopped at the cap: no tokens, so its loss and BPB read NaN (null in JSON)."""
    return EvalResult(
        loss_sum=float("nan"), tokens=0, bytes=0, elapsed_s=0.0, mode=mode, stride=stride, window=window
    )


def _eval_stopped(run: RunState, scores: dict[str, Any], exc: EvalTimeLimit, skipped: list[str]) -> None:
    cap = run.config.eval.max_eval_seconds
    run.log.log(
        f"!!! EVAL OVER TIME: {exc}; cap {cap:g}s; skipped: {', '.join(skipped) or 'nothing'}; "
        "no score is reported and the result is marked invalid !!!",
        event="eval_over_time",
        message=str(exc),
        cap_s=cap,
        skipped=skipped,
    )
    scores["eval_stopped"] = str(exc)


def score_artifact(run: RunState, scorer: Scorer) -> dict[str, Any]:
    """Every rank reads the artifact back from disk, rebuilds the model and scores it.

    The eval clock starts before the artifact is read; ``eval.max_eval_seconds`` from then
    (plus the shuffled baseline's time, which is not scored) is a deadline the evaluations
    check between batches. A pass stopped there scores NaN, the later ones are skipped, and
    ``scores["eval_stopped"]`` says why (the verdict marks the run invalid).
    """
    config, log = run.config, run.log
    t0 = time.perf_counter()
    deadline = t0 + config.eval.max_eval_seconds
    state, _manifest = load_state_dict(run.artifact_path, run.manager.registry)
    model = config.model.build(config.data.vocab_size).to(run.dist.device)
    model.load_state_dict(state, strict=True)
    tag = f"final_{run.quantizer_tag}_{run.compressor_tag}_roundtrip"
    stride, window = config.eval.eval_stride, scorer.window()
    scores: dict[str, Any] = {
        "roundtrip": None,
        "sliding": None,
        "shuffled_ce": float("nan"),
        "eval_stopped": None,
        "ttt": None,
        "ttt_time_ms": None,
        "ttt_adapter": None,
    }
    ttt = config.eval.adapter is not None
    stride_used = min(stride, window)
    try:
        roundtrip = scorer.standard(model, deadline=deadline)
    except EvalTimeLimit as exc:
        scores["roundtrip"] = _unscored("standard", None, config.train.train_seq_len)
        if scorer.sliding_enabled():
            scores["sliding"] = _unscored("sliding", stride_used, window)
        if ttt:
            scores["ttt"] = _unscored("ttt", stride_used, window)
        skipped = ["shuffled baseline"] + (["sliding_window"] if scorer.sliding_enabled() else [])
        _eval_stopped(run, scores, exc, skipped + (["ttt"] if ttt else []))
        scores["eval_time_ms"] = 1000.0 * (time.perf_counter() - t0)
        return scores
    rt_ms = 1000.0 * (time.perf_counter() - t0)
    log_score(log, tag, "", roundtrip, f"eval_time:{rt_ms:.0f}ms", "roundtrip", eval_time_ms=rt_ms)
    scores["roundtrip"] = roundtrip
    # The shuffled-context baseline is not part of the scored evaluation: timed apart. It uses
    # a private generator, so the passes after it score the same without it (bundles skip it).
    t_shuffle = time.perf_counter()
    model.eval()
    baselines = unshipped_module("baselines")
    if baselines is not None:
        scores["shuffled_ce"] = baselines.shuffled_context_ce(
            model,
            scorer.val,
            seq_len=config.train.train_seq_len,
            batch_seqs=scorer.batch_seqs,
            device=run.dist.device,
            autocast_dtype=run.autocast,
            seed=baselines.DEFAULT_SHUFFLE_SEED,
            rank=run.dist.rank,
            world_size=run.dist.world_size,
        )
    shuffle_s = time.perf_counter() - t_shuffle
    if scorer.sliding_enabled():
        t1 = time.perf_counter()
        try:
            sliding = scorer.sliding(model, deadline=deadline + shuffle_s)
        except EvalTimeLimit as exc:
            scores["sliding"] = _unscored("sliding", stride_used, window)
            if ttt:
                scores["ttt"] = _unscored("ttt", stride_used, window)
            _eval_stopped(run, scores, exc, ["ttt"] if ttt else [])
        else:
            sw_ms = 1000.0 * (time.perf_counter() - t1)
            head = f"stride:{stride} window:{window}"
            timing = f"eval_time:{sw_ms:.0f}ms"
            fields = {"eval_time_ms": sw_ms, "stride": stride, "window": window}
            log_score(log, f"{tag}_sliding_window", head, sliding, timing, "sliding", **fields)
            scores["sliding"] = sliding
    if ttt and scores["eval_stopped"] is None:
        scores["ttt_adapter"] = run.manager.registry.name_of(config.eval.adapter)
        try:
            scores.update(_adaptation().score_ttt(run, scorer, model, deadline + shuffle_s, tag))
        except EvalTimeLimit as exc:
            scores["ttt"] = _unscored("ttt", stride_used, window)
            _eval_stopped(run, scores, exc, [])
    scores["eval_time_ms"] = 1000.0 * (time.perf_counter() - t0 - shuffle_s)
    return scores


def _adaptation() -> Any:
    """`harness.pipeline.adaptation`, imported by name (see `setup.modules_reached_by_name`)."""
    try:
        return importlib.import_module(ADAPTATION_MODULE)
    except ModuleNotFoundError:
        raise ConfigError(
            "eval.adapter needs harness/pipeline/adaptation.py, which this bundle does not carry (it was "
            "bundled without an adapter): run the submission from the repository"
        ) from None
