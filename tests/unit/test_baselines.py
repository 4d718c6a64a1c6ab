"""Baselines against hand-computed values and models whose shuffled-context CE is known in closed form.

Models are float64 functions on CPU: a context-free model (the same log-probabilities at
every position), a "next id = input id + 1" model on a counting sequence (right only where
the permutation leaves the position in place), and uniform logits.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.api.errors import ConfigError, DataError
from harness.pipeline.baselines import (
    BEAT_MARGIN,
    BaselineReport,
    WindowPermutations,
    shuffled_context_ce,
    shuffled_context_sums,
    train_unigram,
    uniform_ce,
    unigram_ce,
)
from harness.pipeline.shards import write_shard

V = 64
L = 16


def _shuffled(forward, tokens, **kw) -> float:
    kw.setdefault("seq_len", L)
    kw.setdefault("batch_seqs", 2)
    kw.setdefault("seed", 1337)
    return shuffled_context_ce(forward, tokens, device="cpu", autocast_dtype=None, **kw)


def _context_free(log_probs: torch.Tensor):
    """Ignores its input: the same distribution at every position."""
    return lambda ids: log_probs.expand(*ids.shape, log_probs.numel()).clone()


def _plus_one(scale: float):
    """Predicts ``input + 1 (mod V)`` with logit ``scale``, 0 elsewhere."""
    return lambda ids: scale * torch.nn.functional.one_hot((ids + 1) % V, V).double()


def _counting(windows: int) -> torch.Tensor:
    # 0, 1, 2, ... mod V: every target is its input + 1, and a window of L <= V ids has no repeats.
    return torch.arange(windows * L + 1, dtype=torch.int64) % V


def test_uniform_is_exactly_ln_v():
    assert uniform_ce(1024) == math.log(1024)
    assert uniform_ce(256) == math.log(256)
    assert abs(uniform_ce(256) - 5.545177444479562) < 1e-15  # not the 4.79906 of the atanh-series "ln"
    with pytest.raises(ConfigError, match="vocab_size"):
        uniform_ce(0)


def _write_splits(tmp_path, train_parts, val=(0, 0, 0)):
    for i, part in enumerate(train_parts):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.array(part, dtype=np.uint16))
    write_shard(tmp_path / "fineweb_val_000000.bin", np.array(val, dtype=np.uint16))


def test_unigram_counts_training_split_with_laplace_smoothing(tmp_path):
    # Train ids 0,1,1,2 | 2,2,3 -> counts [1, 2, 3, 1, 0], N = 7; id 4 never occurs.
    _write_splits(tmp_path, [[0, 1, 1, 2], [2, 2, 3]], val=[4, 4, 4, 4, 4])
    fit = train_unigram(tmp_path, 5)
    assert fit.tokens == 7 and fit.shards == 2 and not fit.capped
    np.testing.assert_allclose(fit.probs, np.array([2, 3, 4, 2, 1]) / 12.0, rtol=0, atol=1e-15)
    assert fit.probs[4] > 0  # never seen, still scorable
    assert abs(fit.probs.sum() - 1.0) < 1e-12


def test_unigram_cap_counts_the_first_tokens_in_stream_order(tmp_path):
    _write_splits(tmp_path, [[0, 1, 1, 2], [2, 2, 3]])
    fit = train_unigram(tmp_path, 5, max_tokens=5)  # 0, 1, 1, 2 | 2
    assert fit.tokens == 5 and fit.shards == 2 and fit.capped
    np.testing.assert_allclose(fit.probs, np.array([2, 3, 3, 1, 1]) / 10.0, rtol=0, atol=1e-15)
    assert not train_unigram(tmp_path, 5, max_tokens=7).capped


def test_unigram_rejects_ids_outside_the_vocabulary(tmp_path):
    _write_splits(tmp_path, [[0, 1, 7]])
    with pytest.raises(DataError, match=r"fineweb_train_000000\.bin.*token id 7 at position 2"):
        train_unigram(tmp_path, 5)


def test_unigram_ce_by_hand_scores_only_the_targets():
    probs = np.array([0.5, 0.25, 0.25])
    # val_tokens[0] = 2 is context only; targets 1, 2, 0, 0.
    tokens = torch.tensor([2, 1, 2, 0, 0], dtype=torch.int64)
    expected = (math.log(4) + math.log(4) + math.log(2) + math.log(2)) / 4
    assert abs(unigram_ce(probs, tokens) - expected) < 1e-15
    with pytest.raises(ConfigError, match="sum to 1"):
        unigram_ce(np.array([0.5, 0.25, 0.2]), tokens)
    with pytest.raises(ConfigError, match="> 0"):
        unigram_ce(np.array([0.75, 0.25, 0.0]), tokens)


def test_context_free_model_scores_the_same_with_shuffled_context():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (5 * L + 1,), generator=gen, dtype=torch.int64)
    probs = torch.rand(V, generator=gen, dtype=torch.float64) + 0.1
    probs /= probs.sum()
    expected = unigram_ce(probs.numpy(), tokens)
    by_hand = float(-probs.log()[tokens[1:]].mean())
    assert abs(expected - by_hand) < 1e-12
    assert abs(_shuffled(_context_free(probs.log()), tokens) - expected) < 1e-12


def _fixed_points(seed: int, windows: int) -> int:
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(L, generator=gen) for _ in range(windows)]
    return sum(int((p == torch.arange(L)).sum()) for p in perms)


def test_order_using_model_loses_its_edge_with_shuffled_context():
    windows, scale, seed = 5, 8.0, 1337
    tokens = _counting(windows)
    right = -math.log(math.exp(scale) / (math.exp(scale) + V - 1))  # CE when the +1 guess is right
    wrong = -math.log(1.0 / (math.exp(scale) + V - 1))
    x, y = tokens[:-1].view(-1, L), tokens[1:].view(-1, L)
    logits = _plus_one(scale)(x)
    plain = float(torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1)))
    assert abs(plain - right) < 1e-12  # the model is right everywhere in order
    # Shuffled: x[perm[t]] + 1 == y[t] only where perm[t] == t (no repeated ids in a window).
    fixed = _fixed_points(seed, windows)
    total = windows * L
    expected = (fixed * right + (total - fixed) * wrong) / total
    shuffled = _shuffled(_plus_one(scale), tokens, seed=seed)
    assert abs(shuffled - expected) < 1e-12
    assert shuffled > plain + 1.0


def test_inputs_are_permuted_and_targets_stay_in_place():
    windows, scale, seed = 4, 8.0, 1337
    tokens = _counting(windows)
    seen = []

    def identity(ids: torch.Tensor) -> torch.Tensor:  # predicts "next id = this input id"
        seen.append(ids.clone())
        return scale * torch.nn.functional.one_hot(ids, V).double()

    ce = _shuffled(identity, tokens, seed=seed, batch_seqs=3)
    gen = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(L, generator=gen) for _ in range(windows)]
    x = tokens[:-1].view(-1, L)
    assert torch.equal(torch.cat(seen), torch.stack([x[w][perms[w]] for w in range(windows)]))
    # Right where x[perm[t]] == y[t] = x[t] + 1, i.e. perm[t] == t + 1. Permuting the targets
    # instead would be right where perm[t] == t - 1: a different count for this seed.
    successors = sum(int((p[:-1] == torch.arange(1, L)).sum()) for p in perms)
    predecessors = sum(int((p[1:] == torch.arange(0, L - 1)).sum()) for p in perms)
    assert successors != predecessors
    right = -math.log(math.exp(scale) / (math.exp(scale) + V - 1))
    wrong = -math.log(1.0 / (math.exp(scale) + V - 1))
    total = windows * L
    assert abs(ce - (successors * right + (total - successors) * wrong) / total) < 1e-12


def _cumulative_mean_model():
    """Causal, order-sensitive: position t sees the mean embedding of inputs 0..t."""
    gen = torch.Generator().manual_seed(3)
    embed = torch.randn(V, 8, generator=gen, dtype=torch.float64)
    head = torch.randn(8, V, generator=gen, dtype=torch.float64)

    def forward(ids: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, ids.shape[1] + 1, dtype=torch.float64).view(1, -1, 1)
        return (embed[ids].cumsum(dim=1) / counts) @ head

    return forward


def test_permutation_is_fixed_by_seed_and_window_not_by_rank_split():
    windows = 5  # odd, so the two ranks get 2 and 3 windows
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (windows * L + 1,), generator=gen, dtype=torch.int64)
    model = _cumulative_mean_model()
    kw = dict(seq_len=L, batch_seqs=2, device="cpu", autocast_dtype=None, seed=7)
    one = shuffled_context_sums(model, tokens, **kw)
    parts = [shuffled_context_sums(model, tokens, rank=r, world_size=2, **kw) for r in (0, 1)]
    assert parts[0][1] == 2 * L and parts[1][1] == 3 * L
    assert parts[0][1] + parts[1][1] == one[1] == windows * L
    assert abs(parts[0][0] + parts[1][0] - one[0]) < 1e-9
    # Rank 1 starts at window 2: it must use permutations 2..4 of the seed, not 0..2.
    restarted = shuffled_context_sums(model, tokens[2 * L :], **kw)[0]
    assert abs(parts[1][0] - restarted) > 1e-6
    assert torch.equal(WindowPermutations(7, L, first=3).take(1)[0], WindowPermutations(7, L).take(5)[3])
    # Same seed, same number; another seed, another number.
    assert _shuffled(model, tokens, seed=7) == _shuffled(model, tokens, seed=7)
    assert abs(_shuffled(model, tokens, seed=7) - _shuffled(model, tokens, seed=8)) > 1e-6


def test_shuffled_pass_rejects_a_stream_that_is_not_whole_windows():
    with pytest.raises(DataError, match="k \\* seq_len \\+ 1"):
        _shuffled(_plus_one(1.0), torch.arange(2 * L, dtype=torch.int64))
    with pytest.raises(ConfigError, match="logits of shape"):
        _shuffled(lambda ids: torch.zeros(ids.shape[0], V), _counting(2))


def test_uniform_model_does_not_beat_all_baselines():
    tokens = _counting(3)
    zero = lambda ids: torch.zeros(*ids.shape, V)  # noqa: E731 - float32, as a real model's logits
    model_ce = _shuffled(zero, tokens)  # a uniform model's CE is ln V whatever its context
    assert abs(model_ce - math.log(V)) < 1e-6
    report = BaselineReport(
        model_ce=model_ce,
        uniform_ce=uniform_ce(V),
        unigram_ce=math.log(V) - 0.01,
        shuffled_ce=model_ce,
        shuffle_seed=1337,
        unigram_tokens=1000,
    )
    assert not report.beats_all
    assert report.not_beaten() == ["uniform", "unigram", "shuffled"]
    assert (
        report.alert_line() == "!!! BASELINE CHECK FAILED: model does not beat uniform, unigram, shuffled !!!"
    )
    record = json.loads(json.dumps(report.as_record()))
    assert record["beats_all"] is False and record["shuffle_seed"] == 1337


def test_report_passes_only_below_every_baseline():
    good = BaselineReport(
        model_ce=3.0,
        uniform_ce=math.log(256),
        unigram_ce=4.9,
        shuffled_ce=3.5,
        shuffle_seed=1337,
        unigram_tokens=10,
    )
    assert good.beats_all and good.alert_line() is None
    assert good.log_line() == (
        "baselines: model_ce:3.0000 uniform_ce:5.5452 unigram_ce:4.9000 shuffled_ce:3.5000 seed:1337 "
        "unigram_tokens:10 beats_all:True"
    )
    assert set(good.as_record()) >= {
        "model_ce",
        "uniform_ce",
        "unigram_ce",
        "shuffled_ce",
        "shuffle_seed",
        "unigram_tokens",
        "beats_all",
    }
    tie = BaselineReport(
        model_ce=3.5 - BEAT_MARGIN / 2,
        uniform_ce=9.0,
        unigram_ce=9.0,
        shuffled_ce=3.5,
        shuffle_seed=1,
        unigram_tokens=1,
    )
    assert tie.not_beaten() == ["shuffled"] and "shuffled" in tie.alert_line()
    nan = BaselineReport(
        model_ce=math.nan, uniform_ce=9.0, unigram_ce=9.0, shuffled_ce=9.0, shuffle_seed=1, unigram_tokens=1
    )
    assert not nan.beats_all
