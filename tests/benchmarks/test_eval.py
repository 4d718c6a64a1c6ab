"""Evaluation throughput: standard tokens/s, and sliding-window windows/s of the fast path
(`harness.pipeline.eval.evaluate_sliding`, head on scored positions only) against the plain one
(`evaluate_sliding_reference`), with the time both would take on the full validation split
(62,021,632 tokens, window 2048, stride 64) at the measured rate.

The model is the baseline GPT shrunk to 2 layers x 64 (vocabulary 1024), so the projection
is this device's time for that tiny model, a yardstick for comparing runs, not a record's time.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.pipeline.eval import (
    evaluate_sliding,
    evaluate_sliding_reference,
    evaluate_standard,
    sliding_windows,
)
from harness.pipeline.setup import autocast_dtype_for
from harness.pipeline.submission import build_submission_config
from harness.tools.bench import (
    FULL_STRIDE,
    FULL_VAL_TOKENS,
    FULL_WINDOW,
    shrink_config,
    sliding_window_count,
    uniform_luts,
)
from tests.benchmarks.conftest import ROOT, median_s, model_shape, synced

STD_SEQ_LEN, STD_SEQS, STD_BATCH = 1024, 8, 4
SW_WINDOWS, SW_BATCH = 8, 4
ROUNDS = 5


@pytest.fixture(scope="module")
def tiny(device: torch.device) -> tuple[Any, torch.nn.Module]:
    config = shrink_config(build_submission_config(ROOT / "submissions" / "baseline"))
    torch.manual_seed(0)
    return config, config.model.build(config.data.vocab_size).to(device).eval()


def _tokens(n: int, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(0))


@pytest.mark.benchmark(group="eval")
def test_eval_standard(bench: Any, device: torch.device, sync: Any, tiny: Any) -> None:
    config, model = tiny
    tokens = _tokens(STD_SEQS * STD_SEQ_LEN + 1, config.data.vocab_size)
    luts = uniform_luts(config.data.vocab_size)

    def run() -> Any:
        return evaluate_standard(
            model,
            tokens,
            luts,
            seq_len=STD_SEQ_LEN,
            batch_seqs=STD_BATCH,
            device=device,
            autocast_dtype=autocast_dtype_for(device),
        )

    bench.extra_info.update(
        model_shape(config, sum(p.numel() for p in model.parameters()), train=False),
        eval_seq_len=STD_SEQ_LEN,
        eval_tokens=STD_SEQS * STD_SEQ_LEN,
        batch_seqs=STD_BATCH,
    )
    result = bench.pedantic(synced(run, sync), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    median = median_s(bench)
    if median is not None:
        bench.extra_info["tokens_per_s"] = STD_SEQS * STD_SEQ_LEN / median
    assert result.tokens == STD_SEQS * STD_SEQ_LEN


def _sliding(bench: Any, device: torch.device, sync: Any, tiny: Any, fn: Any) -> None:
    config, model = tiny
    total = FULL_WINDOW + (SW_WINDOWS - 1) * FULL_STRIDE  # exactly SW_WINDOWS windows
    tokens = _tokens(total + 1, config.data.vocab_size)
    luts = uniform_luts(config.data.vocab_size)
    assert len(sliding_windows(total, FULL_WINDOW, FULL_STRIDE)) == SW_WINDOWS

    def run() -> Any:
        return fn(
            model,
            tokens,
            luts,
            window=FULL_WINDOW,
            stride=FULL_STRIDE,
            batch_seqs=SW_BATCH,
            device=device,
            autocast_dtype=autocast_dtype_for(device),
        )

    full = sliding_window_count(FULL_VAL_TOKENS, FULL_WINDOW, FULL_STRIDE)
    bench.extra_info.update(
        model_shape(config, sum(p.numel() for p in model.parameters()), train=False),
        model="2x64 baseline GPT",
        window=FULL_WINDOW,
        stride=FULL_STRIDE,
        windows=SW_WINDOWS,
        batch_seqs=SW_BATCH,
        full_val_windows=full,
    )
    result = bench.pedantic(synced(run, sync), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    median = median_s(bench)
    if median is not None:
        per_s = SW_WINDOWS / median
        bench.extra_info.update(windows_per_s=per_s, projected_full_val_s=full / per_s)
    assert result.tokens == total  # every target scored exactly once


@pytest.mark.benchmark(group="eval")
def test_eval_sliding_fast(bench: Any, device: torch.device, sync: Any, tiny: Any) -> None:
    _sliding(bench, device, sync, tiny, evaluate_sliding)


@pytest.mark.benchmark(group="eval")
def test_eval_sliding_reference(bench: Any, device: torch.device, sync: Any, tiny: Any) -> None:
    _sliding(bench, device, sync, tiny, evaluate_sliding_reference)
