"""One run of a submission, end to end: setup -> train -> export -> score -> report.

The order and the rules follow the upstream baseline (docs/protocol.md §4.1): training under
the wallclock cap, a pre-quantization validation, quantize + compress into an artifact
file, every rank reads the artifact back from disk and evaluates the dequantized model
(standard, then the sliding window at stride 64), and the byte budget is measured from the
shipped files. Everything that decides the score lives here and in `harness.pipeline.eval`,
`harness.pipeline.bpb` and `harness.pipeline.budget`; plugins only supply components and observe.

Outputs, in ``<submission>/runs/<run_id>/``: ``train.log``, ``metrics.jsonl``, the bundled
``train_gpt.py`` whose bytes are counted, the artifact, ``config.json`` and
``submission.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from harness.api import config as cfgmod
from harness.api.config import RunConfig
from harness.api.context import DistInfo
from harness.api.errors import TrainingInterrupted
from harness.pipeline.distributed import (
    already_reported,
    init_distributed,
    peer_lost,
    report_rank_failure,
    shutdown,
)
from harness.pipeline.export import export, ship_existing_artifact
from harness.pipeline.failure import error_line, report_failure
from harness.pipeline.flags import RunFlags, add_run_flags, run_flags
from harness.pipeline.plugin_manager import run_manager
from harness.pipeline.report import report
from harness.pipeline.runlog import RunLogger
from harness.pipeline.scorer import fmt_scores
from harness.pipeline.scoring import score_artifact
from harness.pipeline.setup import (
    RunState,
    autocast_dtype_for,
    checkpoint_module,
    load_data,
    prepare_run_dir,
    recorded_overrides,
    replay_overrides,
    start,
    submission_dir_of_main,
)
from harness.pipeline.trainer import grad_accum_steps
from harness.pipeline.training import load_trained, train
from harness.pipeline.unshipped import skipped_line, unshipped_module


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
    bundle run directly), the script's own command line may carry the run flags of
    `harness.pipeline.flags`, as ``harness/run.py`` does.
    """
    if submission_dir is not None:
        return _run_and_shutdown(config, submission_dir, dict(sets or {}), run_id, resume)
    try:
        flags = script_flags(sys.argv[1:])
        sets = {**flags.sets, **(sets or {})}
        return _run_and_shutdown(
            config, submission_dir_of_main(), sets, run_id or flags.run_id, resume or flags.resume
        )
    except BaseException as exc:  # a script ends with one error line, as harness/run.py does
        if isinstance(exc, SystemExit):
            raise
        raise SystemExit(report_failure(exc, already_reported(exc))) from None


def script_flags(argv: list[str]) -> RunFlags:
    """The run flags of a submission script's own command line."""
    parser = argparse.ArgumentParser(prog=Path(sys.argv[0]).name, description="Run this submission.")
    return run_flags(add_run_flags(parser).parse_args(argv))


def _run_and_shutdown(
    config: RunConfig, submission_dir: Path, sets: dict[str, str], run_id: str | None, resume: Path | None
) -> dict[str, Any] | None:
    dist = init_distributed()
    finished = False
    try:
        record = pipeline(config, dist, Path(submission_dir), sets, run_id, resume)
        finished = True
        return record
    except BaseException as exc:
        # The peers of a failed rank then fail on the broken group; this line names the cause.
        report_rank_failure(dist, exc)
        lost = peer_lost(dist, exc)  # a dead peer is no bug of this rank: that line is the report
        if lost is not None:
            raise lost from exc
        raise
    finally:
        shutdown(dist, finished=finished)


# Imported with the runner, as a plain import would be: its snapshot of the scoring code is
# taken before any submission code that imports the runner can run.
_INTEGRITY = unshipped_module("integrity")


def _untampered(config: RunConfig, frozen: str, when: str) -> None:
    if _INTEGRITY is not None:
        _INTEGRITY.check_scoring_code(when)
        _INTEGRITY.check_config_unchanged(config, frozen, when)


def pipeline(
    config: RunConfig,
    dist: DistInfo,
    submission_dir: Path,
    sets: dict[str, str],
    run_id: str | None,
    resume: Path | None,
) -> dict[str, Any] | None:
    """The run, phase by phase: setup -> train -> export -> score -> report."""
    if dist.device.type == "cuda":  # TF32 matmuls, as every upstream script enables
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    recorded = recorded_overrides()  # a shipped bundle replays the run that wrote it
    config = cfgmod.resolve(
        config, cuda=dist.device.type == "cuda", environ=os.environ, sets=sets, recorded=recorded
    )
    manager = run_manager(cfgmod.component_modules(config))
    manager.hook.pg_configure(run=config)
    checks = unshipped_module("preflight")  # a bundle without it finds a broken component later
    if checks is not None:
        checks.preflight(config, manager.registry)  # every component built once: nothing fails after training
    origin = unshipped_module("code_origin")
    if _INTEGRITY is not None:  # defence in depth (issue 11); pgolf verify is the check
        _INTEGRITY.check_scoring_code("before training")
    if origin is not None:  # every byte that runs is counted
        origin.check_code_origin(submission_dir, cfgmod.component_modules(config))
    frozen = _INTEGRITY.config_fingerprint(config) if _INTEGRITY is not None else ""
    rid, run_dir = (  # a mismatched resume is refused before anything in the folder changes
        prepare_run_dir(submission_dir, run_id, dist)
        if resume is None
        else checkpoint_module().resume_run_dir(resume, run_id, config, dist.world_size)
    )
    log = RunLogger(run_dir, dist.rank)
    accum = grad_accum_steps(config, dist.world_size)
    run_state = RunState(config, dist, manager, log, rid, run_dir, autocast_dtype_for(dist.device), accum)
    run_state.overrides = replay_overrides(recorded, os.environ, sets)
    eval_only = bool(config.train.load_model_path)
    try:
        start(run_state, submission_dir)
        for phase, module in (("preflight", checks), ("code_origin", origin), ("integrity", _INTEGRITY)):
            if module is None:
                log.log(skipped_line(phase))
        scorer = load_data(run_state)
        ctx, result = (
            load_trained(run_state) if eval_only else train(run_state, scorer, resume=resume is not None)
        )
        # Pre-quantization score of the weights that will be exported (after any averaging swap).
        pre = scorer.standard(ctx.model)
        log.log(
            f"final_prequant {fmt_scores(pre, True)}",
            event="prequant",
            val_loss=pre.val_loss,
            val_bpb=pre.val_bpb,
        )
        _untampered(config, frozen, "before export")
        ship_existing_artifact(run_state) if eval_only else export(run_state, ctx)
        scores = score_artifact(run_state, scorer)
        _untampered(config, frozen, "before the report")
        return report(run_state, ctx, result, pre, scores) if dist.is_main else None
    except TrainingInterrupted:  # on purpose (train.stop_after_step): not an error
        return None
    except BaseException as exc:  # the entry point prints this same line once, to stderr
        log.error(error_line(exc), kind=type(exc).__name__)
        raise
    finally:
        log.close()
