"""Score-first TTT (`harness.pipeline.adaptation` + `plugins.adapt.sgd_chunks`) on float64 CPU
models: learning rate 0 equals the plain sliding score; the walk equals an independent port of
the upstream record's ``eval_val_ttt``; an adapter that would profit from future tokens gains
exactly nothing; an adapter sees only scored tokens, as copies, and cannot re-score."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.api.errors import ConfigError, EvalTimeLimit
from harness.pipeline.adaptation import ChunkScore, ScoreLedger, chunk_windows, evaluate_adaptive
from harness.pipeline.bpb import ByteLUTs
from harness.pipeline.eval import evaluate_sliding, sliding_windows
from plugins.adapt.sgd_chunks import SgdChunksConfig
from plugins.arch.gpt import GPTConfig

V = 64


def _luts() -> ByteLUTs:
    g = torch.Generator().manual_seed(7)
    return ByteLUTs(
        base_bytes=torch.randint(1, 4, (V,), generator=g, dtype=torch.int32),
        has_leading_space=torch.rand(V, generator=g) < 0.3,
        is_boundary=torch.arange(V) == 0,
        vocab_size=V,
    )


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.int64)


def _gpt() -> nn.Module:
    torch.manual_seed(0)
    return GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2).build(V).double()


class BigramLM(nn.Module):
    """logits = table[current token]: what it predicts after a token is one row of the table."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.zeros(V, V, dtype=torch.float64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


class Memorizer:
    """The oracle: after a chunk it makes the model certain of every pair it was handed. Given
    unscored tokens it would score near zero; given scored ones it can only help later repeats."""

    name = "memorizer"

    def __init__(self) -> None:
        self.received: list[tuple[int, torch.Tensor]] = []

    def start(self, model, session):
        self.model = model

    def adapt(self, chunk):
        self.received.append((chunk.start, chunk.tokens))
        learn_pairs(self.model, chunk.tokens)


def learn_pairs(model: BigramLM, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        for a, b in zip(tokens[:-1].tolist(), tokens[1:].tolist(), strict=True):
            model.table[a] = -30.0
            model.table[a, b] = 30.0


KW = dict(window=32, stride=8, batch_seqs=4, device="cpu")
SHORT = dict(window=8, stride=4, batch_seqs=4, device="cpu")
"""Windows shorter than a chunk (the first window scores all of its positions)."""


def test_chunk_windows_follow_the_upstream_rule():
    for total, window, stride, chunk in [
        (200, 32, 8, 64),
        (257, 48, 16, 50),
        (90, 16, 16, 7),
        (40, 8, 4, 1000),
    ]:
        windows = sliding_windows(total, window, stride)
        groups = chunk_windows(windows, chunk, total)
        context = window - stride
        # upstream: window starts ws with ws + context < total, scored from ws (first) or ws + context
        starts = [ws for ws in range(0, total, stride) if ws + context < total]
        assert [w[0] for w in windows] == starts
        count = (total + chunk - 1) // chunk
        assert len(groups) == count
        for index, group in enumerate(groups):
            for ws, _, _ in group:
                scored_start = ws if ws == 0 else ws + context
                assert min(scored_start // chunk, count - 1) == index
        assert [w for g in groups for w in g] == windows


def test_learning_rate_zero_equals_the_sliding_score():
    tokens, luts = _tokens(193), _luts()
    plain = evaluate_sliding(_gpt(), tokens, luts, **KW)
    model = _gpt()
    out = evaluate_adaptive(
        model, SgdChunksConfig(lr=0.0, epochs=1).build(), tokens, luts, chunk_tokens=48, **KW
    )
    assert out.count == 4 and len(out.chunks) == 4
    assert (out.result.tokens, out.result.bytes) == (plain.tokens, plain.bytes) == (192, plain.bytes)
    assert abs(out.result.val_bpb - plain.val_bpb) < 1e-9
    assert abs(out.result.loss_sum - plain.loss_sum) < 1e-9
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), _gpt().state_dict().values(), strict=True)
    )


def upstream_ttt_reference(model, tokens, luts, *, seq_len, stride, chunk, lr, momentum, epochs, batch_seqs):
    """The record's ``eval_val_ttt`` for one rank, re-written plainly in float64 (no compile,
    no autocast): chunked windows scored under no_grad, then SGD on the chunk's rows."""
    total = tokens.numel() - 1
    context = seq_len - stride
    starts = [ws for ws in range(0, total, stride) if ws + context < total]
    count = (total + chunk - 1) // chunk
    per_chunk = [[] for _ in range(count)]
    for ws in starts:
        per_chunk[min((ws if ws == 0 else ws + context) // chunk, count - 1)].append(ws)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    loss_sum, scored, nbytes = 0.0, 0, 0
    for ci, starts_c in enumerate(per_chunk):
        model.eval()
        with torch.no_grad():
            for ws in starts_c:
                end = min(ws + seq_len, total)
                s = 0 if ws == 0 else context
                x, y = tokens[ws:end], tokens[ws + 1 : end + 1]
                nll = F.cross_entropy(model(x[None])[0], y, reduction="none")[s:]
                loss_sum += nll.sum().item()
                scored += end - ws - s
                tgt, prev = y[s:], x[s:]
                b = (
                    luts.base_bytes[tgt].long()
                    + (luts.has_leading_space[tgt] & ~luts.is_boundary[prev]).long()
                )
                nbytes += int(b.sum())
        if ci == count - 1:
            continue
        model.train()
        c0, c1 = ci * chunk, min((ci + 1) * chunk, total)
        rows = (c1 - c0) // seq_len
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * ci / max(count - 1, 1)))
        for _ in range(epochs):
            for bs in range(0, rows, batch_seqs):
                be = min(bs + batch_seqs, rows)
                local = tokens[c0 + bs * seq_len : c0 + be * seq_len + 1]
                x, y = local[:-1].view(-1, seq_len), local[1:].view(-1, seq_len)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1)).backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
    return loss_sum, scored, nbytes


def test_the_walk_equals_the_upstream_record_reference():
    tokens, luts = _tokens(225, seed=3), _luts()
    ref = upstream_ttt_reference(
        _gpt(), tokens, luts, seq_len=32, stride=8, chunk=64, lr=0.05, momentum=0.9, epochs=2, batch_seqs=2
    )
    plain = evaluate_sliding(_gpt(), tokens, luts, **KW)
    cfg = SgdChunksConfig(lr=0.05, momentum=0.9, epochs=2, grad_clip=1.0, batch_seqs=2)
    out = evaluate_adaptive(_gpt(), cfg.build(), tokens, luts, chunk_tokens=64, **KW)
    assert (out.result.tokens, out.result.bytes) == (ref[1], ref[2])
    assert out.result.loss_sum == pytest.approx(ref[0], rel=1e-12, abs=1e-9)
    assert abs(out.result.loss_sum - plain.loss_sum) > 1e-3  # the adaptation did change the score


def test_an_oracle_adapter_gains_exactly_nothing():
    # Every token appears once, so no pair the oracle learns from scored tokens ever recurs.
    tokens, luts = torch.randperm(V, generator=torch.Generator().manual_seed(1))[:49], _luts()
    plain = evaluate_sliding(BigramLM(), tokens, luts, **SHORT)
    oracle = Memorizer()
    out = evaluate_adaptive(BigramLM(), oracle, tokens, luts, chunk_tokens=16, **SHORT)
    assert len(oracle.received) == 2  # after chunks 0 and 1 of 3
    assert out.result.tokens == plain.tokens == 48
    assert out.result.loss_sum == pytest.approx(plain.loss_sum, rel=1e-15)
    assert plain.val_loss == pytest.approx(math.log(V), rel=1e-12)
    # Control: handed the unscored stream, the same oracle would have scored almost nothing.
    leaked = BigramLM()
    learn_pairs(leaked, tokens)
    assert evaluate_sliding(leaked, tokens, luts, **SHORT).val_loss < 1e-20


def test_the_adapter_gets_only_scored_tokens_as_private_copies():
    tokens, luts = _tokens(300, seed=5), _luts()
    oracle = Memorizer()
    out = evaluate_adaptive(BigramLM(), oracle, tokens, luts, chunk_tokens=64, **SHORT)
    assert len(oracle.received) == out.count - 1 == 4
    for (start, got), chunk in zip(oracle.received, out.chunks, strict=False):
        assert start + got.numel() - 1 == chunk.last_target  # nothing past the committed chunk
        assert torch.equal(got, tokens[start : chunk.last_target + 1])
        assert got.untyped_storage().nbytes() == got.numel() * 8  # no window onto the stream
        assert got.untyped_storage().data_ptr() != tokens.untyped_storage().data_ptr()
    starts = [s for s, _ in oracle.received]
    assert starts == [0] + [c.last_target for c in out.chunks[:-2]]


def test_an_adapter_cannot_rescore():
    # Chunk 1 repeats chunk 0: learning chunk 0 after its score may help chunk 1, never chunk 0.
    half = torch.randperm(V, generator=torch.Generator().manual_seed(2))[:16]
    tokens, luts = torch.cat([half, half, half[:1]]), _luts()
    out = evaluate_adaptive(BigramLM(), Memorizer(), tokens, luts, chunk_tokens=16, **SHORT)
    first, second = out.chunks
    assert first.loss_sum / first.tokens == pytest.approx(math.log(V), rel=1e-12)  # as scored before adapting
    assert second.loss_sum / second.tokens < 1e-20
    assert (first.first_target, first.last_target, second.first_target, second.last_target) == (1, 16, 17, 32)
    ledger = ScoreLedger()
    ledger.commit(first)
    with pytest.raises(ConfigError, match="scored exactly once"):
        ledger.commit(first)
    with pytest.raises(ConfigError, match="scored exactly once"):
        ledger.commit(ChunkScore(1, 10, 32, 0.0, 23, 23))
    with pytest.raises(AttributeError):
        first.loss_sum = 0.0  # committed scores are frozen


class Peeker(Memorizer):
    name = "peeker"

    def start(self, model, session):
        self.model = model
        model.register_forward_pre_hook(lambda module, args: None)


def test_a_forward_hook_is_refused():
    with pytest.raises(ConfigError, match="adapter peeker registered forward_pre hook on <model>"):
        evaluate_adaptive(BigramLM(), Peeker(), _tokens(100), _luts(), chunk_tokens=32, **KW)


def test_the_eval_cap_stops_the_walk_and_names_the_chunk():
    with pytest.raises(EvalTimeLimit, match="score-first TTT stopped at chunk 0 of 4"):
        evaluate_adaptive(
            BigramLM(),
            Memorizer(),
            _tokens(129),
            _luts(),
            chunk_tokens=32,
            deadline=time.perf_counter() - 1,
            **KW,
        )


def test_sgd_chunks_cosine_and_settings():
    adapter = SgdChunksConfig(lr=0.004).build()
    assert adapter.lr_at(0, 5) == 0.004
    assert adapter.lr_at(2, 5) == pytest.approx(0.002, rel=1e-15)
    assert adapter.lr_at(4, 5) == pytest.approx(0.0, abs=1e-18)
    assert adapter.lr_at(0, 1) == 0.004
    record = SgdChunksConfig()
    assert (record.lr, record.momentum, record.epochs, record.grad_clip) == (0.005, 0.9, 3, 1.0)
    for field, bad in [
        ("lr", -1.0),
        ("momentum", 1.0),
        ("epochs", -1),
        ("grad_clip", True),
        ("batch_seqs", 0),
    ]:
        with pytest.raises(ConfigError, match=f"sgd_chunks.{field}: expected"):
            SgdChunksConfig(**{field: bad})
