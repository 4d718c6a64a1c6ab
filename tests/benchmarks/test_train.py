"""Training-step benchmarks: one step of every submission at a fixed small CPU shape, and the
harness's overhead over a hand-written step of the same model and optimizer.

Every ``submissions/*/train_gpt.py`` is shrunk by `harness.tools.bench.shrink_config` (its own
``build_config()`` through the ``--set`` machinery) to 2 layers x 64 wide, rows of 128,
2048 tokens per step, and stepped through `harness.pipeline.trainer.Trainer` on seeded random tokens,
observer plugins (EMA, SWA, late QAT, ...) included.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from harness.pipeline.submission import build_submission_config
from harness.tools.bench import OVERHEAD_LIMIT, TrainBench, build_train_bench, shrink_config
from tests.benchmarks.conftest import ROOT, median_s, model_shape, synced

SUBMISSIONS = sorted(p.parent.name for p in (ROOT / "submissions").glob("*/train_gpt.py"))
TRAIN_ROUNDS = 15
OVERHEAD_ROUNDS = 40


def _bench_for(name: str, device: torch.device, run_dir: Path) -> TrainBench:
    return build_train_bench(
        shrink_config(build_submission_config(ROOT / "submissions" / name)), device, run_dir
    )


@pytest.mark.benchmark(group="train_step")
@pytest.mark.parametrize("name", SUBMISSIONS)
def test_train_step(bench: Any, device: torch.device, sync: Any, tmp_path: Path, name: str) -> None:
    tb = _bench_for(name, device, tmp_path)
    try:
        tb.step()  # first-step allocations and lazily created optimizer state
        bench.extra_info.update(
            submission=name,
            **model_shape(tb.config, tb.n_params),
            grad_accum_steps=tb.trainer.accum,
            observers=[type(p).__name__ for p in tb.config.plugins],
        )
        bench.pedantic(synced(tb.step, sync), rounds=TRAIN_ROUNDS, iterations=1, warmup_rounds=1)
        median = median_s(bench)
        if median is not None:
            bench.extra_info["train_tokens_per_s"] = tb.config.train.train_batch_tokens / median
        assert tb.ctx.step == 1 and tb.ctx.train_time_ms > 0
    finally:
        tb.close()


def _reference_step(tb: TrainBench) -> Any:
    """A minimal hand-written step of the same model and optimizers: forward, cross-entropy,
    backward, each optimizer's step, zero_grad (the upstream loop without the harness)."""
    model, opts, loader = tb.ctx.model, list(tb.ctx.optimizer.optimizers.values()), tb.trainer.loader
    train, vocab, dtype = tb.config.train, tb.config.data.vocab_size, tb.ctx.autocast_dtype
    device_type = tb.ctx.dist.device.type

    def step() -> torch.Tensor:
        x, y = loader.next_batch(train.train_batch_tokens, train.train_seq_len, 1)
        with torch.autocast(device_type=device_type, dtype=dtype):
            loss = F.cross_entropy(model(x).float().reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        return loss

    return step


def _interleaved(harness: Any, reference: Any, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per call of both, alternating which goes first, so load changes hit both."""
    h: list[float] = []
    r: list[float] = []
    for i in range(rounds):
        pairs = ((harness, h), (reference, r)) if i % 2 == 0 else ((reference, r), (harness, h))
        for fn, acc in pairs:
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return h, r


@pytest.mark.benchmark(group="plugin_overhead")
def test_plugin_overhead(bench: Any, device: torch.device, sync: Any, tmp_path: Path) -> None:
    """The baseline's step through the harness vs the hand-written step, same model object:
    the median of the per-round ratios must stay under OVERHEAD_LIMIT."""
    tb = _bench_for("baseline", device, tmp_path)
    try:
        if not hasattr(tb.ctx.optimizer, "optimizers"):
            pytest.fail("the baseline's optimizer set no longer exposes its torch optimizers (.optimizers)")
        harness, reference = synced(tb.step, sync), synced(_reference_step(tb), sync)
        for _ in range(3):
            harness()
            reference()
        h, r = _interleaved(harness, reference, OVERHEAD_ROUNDS)
        ratio = statistics.median(a / b for a, b in zip(h, r, strict=True))
        bench.extra_info.update(
            submission="baseline",
            **model_shape(tb.config, tb.n_params),
            rounds=OVERHEAD_ROUNDS,
            plugin_overhead_ratio=ratio,
            ratio_of_medians=statistics.median(h) / statistics.median(r),
            ratio_of_mins=min(h) / min(r),
            harness_median_ms=1e3 * statistics.median(h),
            reference_median_ms=1e3 * statistics.median(r),
        )
        bench.pedantic(harness, rounds=5, iterations=1)
        print(
            f"plugin overhead: harness/hand-written = {ratio:.3f} (median of {OVERHEAD_ROUNDS} paired rounds)"
        )
        assert ratio < OVERHEAD_LIMIT, (
            f"the harness step is {ratio:.3f}x the hand-written step (limit {OVERHEAD_LIMIT})"
        )
    finally:
        tb.close()
