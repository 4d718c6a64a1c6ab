"""Standard and sliding-window evaluators against hand-computed values and brute-force references.

Models are tiny float64 functions on CPU: uniform logits (loss = ln V exactly) and a causal
cumulative-mean model whose predictions depend on how much context it sees.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.api.errors import ConfigError, DataError
from harness.pipeline.bpb import ByteLUTs, count_bytes
from harness.pipeline.eval import (
    EVAL_VERSION,
    EvalResult,
    evaluate_sliding,
    evaluate_standard,
    sliding_windows,
)

V = 6


def _luts() -> ByteLUTs:
    # ids: 0 BOS (boundary), 1 "a", 2 "▁bc", 3 "▁", 4 a byte piece, 5 "xyz"
    return ByteLUTs(
        base_bytes=torch.tensor([0, 1, 2, 0, 1, 3], dtype=torch.int32),
        has_leading_space=torch.tensor([False, False, True, True, False, False]),
        is_boundary=torch.tensor([True, False, False, False, False, False]),
        vocab_size=V,
    )


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (n,), generator=gen, dtype=torch.int64)


class CumulativeMeanLM(nn.Module):
    """Causal: position t sees the mean embedding of inputs 0..t, so context changes logits."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(V, 8, dtype=torch.float64)
        self.head = nn.Linear(8, V, dtype=torch.float64)
        self.requires_grad_(False)  # references below call it outside no_grad

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, ids.shape[1] + 1, dtype=self.embed.weight.dtype).view(1, -1, 1)
        return self.head(self.embed(ids).cumsum(dim=1) / counts)


def _uniform(ids: torch.Tensor) -> torch.Tensor:
    return torch.zeros(*ids.shape, V, dtype=torch.float64)


def _standard(model, tokens, **kw) -> EvalResult:
    kw.setdefault("seq_len", 8)
    kw.setdefault("batch_seqs", 3)
    return evaluate_standard(model, tokens, _luts(), device="cpu", **kw)


def _sliding(model, tokens, **kw) -> EvalResult:
    kw.setdefault("window", 8)
    kw.setdefault("batch_seqs", 3)
    return evaluate_sliding(model, tokens, _luts(), device="cpu", **kw)


def test_eval_version_is_an_int() -> None:
    assert isinstance(EVAL_VERSION, int) and EVAL_VERSION >= 1


def test_uniform_logits_hand_computed_bpb() -> None:
    #          BOS "a" "▁bc" "▁bc" BOS "▁" "xyz" byte "▁bc"
    tokens = torch.tensor([0, 1, 2, 2, 0, 3, 5, 4, 2])
    # targets after their previous token: a=1, ▁bc after a=3, ▁bc after ▁bc=3, BOS=0,
    # ▁ after BOS=0, xyz=3, byte=1, ▁bc after byte=3
    hand_bytes = 1 + 3 + 3 + 0 + 0 + 3 + 1 + 3
    for result in (
        _standard(_uniform, tokens, seq_len=4, batch_seqs=1),
        _sliding(_uniform, tokens, window=4, stride=2, batch_seqs=2),
    ):
        assert result.tokens == 8
        assert result.bytes == hand_bytes
        assert result.val_loss == pytest.approx(math.log(V), rel=1e-14)
        assert result.val_bpb == pytest.approx(8 * math.log(V) / (hand_bytes * math.log(2)), rel=1e-14)


def test_sliding_windows_hand_examples() -> None:
    assert sliding_windows(10, 4, 2) == [(0, 4, 0), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    # final short window (9, 11) scores only target 10
    assert sliding_windows(11, 4, 3) == [(0, 4, 0), (3, 7, 1), (6, 10, 1), (9, 11, 1)]
    assert sliding_windows(3, 8, 2) == [(0, 3, 0)]
    assert sliding_windows(8, 8, 2) == [(0, 8, 0)]
    assert sliding_windows(0, 8, 2) == []
    # stride >= window: non-overlapping sequences, as in the standard evaluation
    assert sliding_windows(9, 4, 7) == [(0, 4, 0), (4, 8, 0), (8, 9, 0)]


def test_sliding_windows_score_every_target_once() -> None:
    for total in range(0, 45):
        for window in range(1, 13):
            for stride in range(1, 15):
                windows = sliding_windows(total, window, stride)
                scored = [s + i for s, e, f in windows for i in range(f, e - s)]
                assert scored == list(range(total)), (total, window, stride)
                for k, (start, end, score_from) in enumerate(windows):
                    assert 0 <= start < end <= total and end - start <= window
                    if k == 0:
                        assert (start, score_from) == (0, 0)  # first window scores all
                    else:
                        # every scored target has >= window - stride tokens of context
                        assert score_from == window - min(stride, window)
                        assert end - start - score_from <= stride


def test_sliding_windows_rejects_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="window"):
        sliding_windows(10, 0, 1)
    with pytest.raises(ConfigError, match="stride"):
        sliding_windows(10, 4, 0)
    with pytest.raises(ConfigError, match="total_targets"):
        sliding_windows(-1, 4, 2)


@pytest.mark.parametrize("stride", [8, 11])
def test_sliding_equals_standard_when_stride_covers_window(stride: int) -> None:
    model = CumulativeMeanLM()
    tokens = _tokens(5 * 8 + 1)
    standard = _standard(model, tokens, seq_len=8, batch_seqs=2)
    sliding = _sliding(model, tokens, window=8, stride=stride, batch_seqs=3)
    assert sliding.tokens == standard.tokens == 40
    assert sliding.bytes == standard.bytes
    assert sliding.loss_sum == pytest.approx(standard.loss_sum, rel=1e-12, abs=0)
    assert (sliding.mode, sliding.stride, sliding.window) == ("sliding", 8, 8)
    assert (standard.mode, standard.stride, standard.window) == ("standard", None, 8)


def _brute_force_sliding(model, tokens: torch.Tensor, window: int, stride: int) -> tuple[float, int]:
    """Each target scored alone on its own unpadded window (start found by formula)."""
    loss, nbytes = 0.0, 0
    luts = _luts()
    for p in range(tokens.numel() - 1):
        start = 0 if p < window else ((p - window) // stride + 1) * stride
        assert p - start >= (window - stride if p >= window else 0)
        logits = model(tokens[start : p + 1].unsqueeze(0))[0, -1]
        loss += float(torch.logsumexp(logits, 0) - logits[tokens[p + 1]])
        nbytes += int(count_bytes(luts, tokens[p : p + 1], tokens[p + 1 : p + 2]))
    return loss, nbytes


@pytest.mark.parametrize("length", [41, 38])
def test_sliding_matches_brute_force_and_uses_context(length: int) -> None:
    model = CumulativeMeanLM(seed=1)
    tokens = _tokens(length, seed=2)
    sliding = _sliding(model, tokens, window=8, stride=3, batch_seqs=4)
    ref_loss, ref_bytes = _brute_force_sliding(model, tokens, 8, 3)
    assert sliding.tokens == length - 1
    assert sliding.bytes == ref_bytes
    assert sliding.loss_sum == pytest.approx(ref_loss, rel=1e-12)
    if (length - 1) % 8 == 0:
        standard = _standard(model, tokens, seq_len=8)
        assert (standard.tokens, standard.bytes) == (sliding.tokens, sliding.bytes)
        # Same targets, more context: a context-dependent model must score differently.
        assert abs(standard.loss_sum - sliding.loss_sum) > 1e-6


def test_standard_matches_per_sequence_reference() -> None:
    model = CumulativeMeanLM(seed=3)
    tokens = _tokens(4 * 8 + 1, seed=4)
    loss = 0.0
    for i in range(4):
        x, y = tokens[i * 8 : i * 8 + 8], tokens[i * 8 + 1 : i * 8 + 9]
        logits = model(x.unsqueeze(0))[0]
        loss += float((torch.logsumexp(logits, 1) - logits[torch.arange(8), y]).sum())
    assert _standard(model, tokens, batch_seqs=3).loss_sum == pytest.approx(loss, rel=1e-12)


def test_first_window_scores_all_its_targets() -> None:
    model = CumulativeMeanLM(seed=5)
    tokens = _tokens(8 + 1, seed=6)
    sliding = _sliding(model, tokens, window=8, stride=2)
    standard = _standard(model, tokens, seq_len=8)
    assert sliding.tokens == 8
    assert sliding.loss_sum == pytest.approx(standard.loss_sum, rel=1e-12)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("mode", ["standard", "sliding"])
def test_rank_results_sum_to_single_rank(world_size: int, mode: str) -> None:
    model = CumulativeMeanLM(seed=7)
    tokens = _tokens(7 * 8 + 1, seed=8)
    if mode == "standard":
        run = lambda **kw: _standard(model, tokens, batch_seqs=2, **kw)  # noqa: E731
    else:
        run = lambda **kw: _sliding(model, tokens, stride=3, batch_seqs=2, **kw)  # noqa: E731
    whole = run()
    parts = [run(rank=r, world_size=world_size) for r in range(world_size)]
    assert all(p.tokens > 0 for p in parts)  # every rank got work
    assert sum(p.tokens for p in parts) == whole.tokens
    assert sum(p.bytes for p in parts) == whole.bytes
    assert sum(p.loss_sum for p in parts) == pytest.approx(whole.loss_sum, rel=1e-12)


def test_progress_reports_every_batch() -> None:
    calls: list[tuple[int, int]] = []
    tokens = _tokens(21)
    _sliding(_uniform, tokens, window=8, stride=4, batch_seqs=2, progress=lambda d, t: calls.append((d, t)))
    total = len(sliding_windows(20, 8, 4))
    assert calls == [(min(i, total), total) for i in range(2, total + 2, 2)]
    calls.clear()
    _standard(_uniform, _tokens(5 * 8 + 1), batch_seqs=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_autocast_path_runs_and_stays_close() -> None:
    model = CumulativeMeanLM(seed=9).float()
    tokens = _tokens(3 * 8 + 1)
    exact = _standard(model, tokens)
    bf16 = _standard(model, tokens, autocast_dtype=torch.bfloat16)
    assert bf16.tokens == exact.tokens
    assert bf16.loss_sum == pytest.approx(exact.loss_sum, rel=2e-2)


def test_bad_inputs_raise_clear_errors() -> None:
    tokens = _tokens(2 * 8 + 1)
    with pytest.raises(DataError, match="k \\* seq_len \\+ 1"):
        _standard(_uniform, tokens[:-1])
    with pytest.raises(DataError, match="outside the vocabulary"):
        _standard(_uniform, torch.cat([tokens[:-1], torch.tensor([V])]))
    with pytest.raises(DataError, match="int64"):
        _standard(_uniform, tokens.int())
    with pytest.raises(ConfigError, match="seq_len"):
        _standard(_uniform, tokens, seq_len=0)
    with pytest.raises(ConfigError, match="rank"):
        _sliding(_uniform, tokens, stride=4, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="logits of shape"):
        _sliding(lambda ids: torch.zeros(*ids.shape, V + 1), tokens, stride=4)


def test_idle_rank_reports_nan_not_an_exception() -> None:
    result = _standard(_uniform, _tokens(8 + 1), rank=0, world_size=2)  # 1 sequence: rank 0 idle
    assert (result.tokens, result.bytes, result.loss_sum) == (0, 0, 0.0)
    assert math.isnan(result.val_loss) and math.isnan(result.val_bpb)
