"""The fast sliding-window evaluation against the plain reference and a hand computation.

Every registered architecture (gpt, gpt with its components, byte_gpt, conv_moe) is built
tiny, in float64 on CPU with random weights, and scored by `evaluate_sliding` (head and loss
on the scored positions only) and `evaluate_sliding_reference` (head and loss everywhere,
then a mask): sums agree to 1e-9 and counts exactly, across window/stride/batch/rank shapes.
A 1-layer model is also checked against per-target losses computed in a Python loop.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.api.errors import ConfigError
from harness.pipeline.bpb import ByteLUTs
from harness.pipeline.eval import (
    EvalResult,
    evaluate_sliding,
    evaluate_sliding_reference,
    head_split,
    sliding_windows,
)
from plugins.arch.bigram_hash import BigramHashConfig
from plugins.arch.byte_gpt import ByteGPTConfig
from plugins.arch.conv_moe import ConvMoEConfig
from plugins.arch.gated_attention import GatedAttentionConfig
from plugins.arch.gpt import GPTConfig
from plugins.arch.parallel_residual import ParallelResidualConfig
from plugins.arch.recycled_core import RecycledCoreConfig
from plugins.arch.smeargate import SmearGateConfig
from plugins.arch.value_embed import ValueEmbedConfig
from plugins.arch.value_residual import ValueResidualConfig
from plugins.arch.xsa import XSAConfig

V = 48
TOL = 1e-9


def _luts() -> ByteLUTs:
    gen = torch.Generator().manual_seed(11)
    boundary = torch.zeros(V, dtype=torch.bool)
    boundary[:2] = True  # two control-like ids
    return ByteLUTs(
        base_bytes=torch.randint(1, 5, (V,), generator=gen, dtype=torch.int32).masked_fill(boundary, 0),
        has_leading_space=torch.rand(V, generator=gen) < 0.4,
        is_boundary=boundary,
        vocab_size=V,
    )


def _tokens(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.int64)


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    # Zero-initialised projections would make the models context-blind; random weights
    # make every position's logits depend on its whole window.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return model.double().eval().requires_grad_(False)


def _gpt(**kw) -> nn.Module:
    return GPTConfig(num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2, **kw).build(V)


def _gpt_components() -> nn.Module:
    comps = (
        BigramHashConfig(buckets=64, dim=8),
        SmearGateConfig(),
        ValueEmbedConfig(layers=(0, 1), dim=8),
        XSAConfig(last_n=1),
        ValueResidualConfig(),
        GatedAttentionConfig(),
        ParallelResidualConfig(last_n=1),
        RecycledCoreConfig(layers=(1,)),
    )
    return _gpt(components=comps)


ARCHS = {
    "gpt": lambda: _gpt(),
    "gpt_components": _gpt_components,
    "byte_gpt": lambda: ByteGPTConfig(d_model=32, n_layers=2, n_heads=4, block_size=64).build(V),
    "conv_moe": lambda: ConvMoEConfig(d_model=16, experts=2, kernel=3, trunk_layers=1).build(V),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def model(request) -> nn.Module:
    return _randomize(ARCHS[request.param](), seed=len(request.param))


def _pair(forward, tokens: torch.Tensor, **kw) -> tuple[EvalResult, EvalResult]:
    common = dict(device="cpu", **kw)
    return evaluate_sliding(forward, tokens, _luts(), **common), evaluate_sliding_reference(
        forward, tokens, _luts(), **common
    )


def _assert_same(fast: EvalResult, ref: EvalResult) -> None:
    assert (fast.tokens, fast.bytes) == (ref.tokens, ref.bytes)
    assert abs(fast.loss_sum - ref.loss_sum) <= TOL * max(1.0, abs(ref.loss_sum))
    if ref.bytes:
        assert abs(fast.val_bpb - ref.val_bpb) <= TOL * ref.val_bpb
    assert (fast.mode, fast.stride, fast.window) == (ref.mode, ref.stride, ref.window)


# (targets + 1 tokens, window, stride, batch_seqs); 70 targets at window 16 stride 4 end on
# a 14-token tail window, 10 targets make one window shorter than the window length.
SHAPES = [
    (71, 16, 4, 3),
    (71, 16, 16, 2),
    (71, 16, 20, 2),
    (50, 16, 1, 7),
    (61, 12, 5, 1),
    (11, 16, 4, 4),
]


@pytest.mark.parametrize("n, window, stride, batch_seqs", SHAPES)
def test_fast_equals_reference(model, n: int, window: int, stride: int, batch_seqs: int) -> None:
    tokens = _tokens(n, seed=n + window + stride)
    fast, ref = _pair(model, tokens, window=window, stride=stride, batch_seqs=batch_seqs)
    assert ref.tokens == n - 1
    _assert_same(fast, ref)


@pytest.mark.parametrize("world_size", [2, 3])
def test_fast_equals_reference_per_rank(model, world_size: int) -> None:
    tokens = _tokens(71, seed=5)
    parts = []
    for rank in range(world_size):
        fast, ref = _pair(model, tokens, window=16, stride=6, batch_seqs=2, rank=rank, world_size=world_size)
        _assert_same(fast, ref)
        parts.append(fast)
    assert sum(p.tokens for p in parts) == 70


def test_tail_window_is_shorter_in_the_shapes_above() -> None:
    starts_ends = sliding_windows(70, 16, 4)
    assert starts_ends[-1][1] - starts_ends[-1][0] == 14  # the case the first SHAPE covers
    assert sliding_windows(10, 16, 4) == [(0, 10, 0)]


class NoSplitLM(nn.Module):
    """A causal model with only ``forward`` (running-mean embedding): the fallback path."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.embed = nn.Parameter(torch.randn(V, 8, generator=gen, dtype=torch.float64))
        self.head = nn.Parameter(torch.randn(V, 8, generator=gen, dtype=torch.float64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, ids.shape[1] + 1, dtype=torch.float64).view(1, -1, 1)
        return (self.embed[ids].cumsum(1) / counts) @ self.head.T


@pytest.mark.parametrize("n, window, stride, batch_seqs", SHAPES[:3])
def test_model_without_hidden_falls_back_to_forward(
    n: int, window: int, stride: int, batch_seqs: int
) -> None:
    lm = NoSplitLM().requires_grad_(False)
    assert head_split(lm) is None
    fast, ref = _pair(lm, _tokens(n, seed=9), window=window, stride=stride, batch_seqs=batch_seqs)
    _assert_same(fast, ref)
    plain = lambda ids: lm(ids)  # noqa: E731 - a bare callable, as rescore/tests may pass
    fast2, _ = _pair(plain, _tokens(n, seed=9), window=window, stride=stride, batch_seqs=batch_seqs)
    assert fast2.loss_sum == fast.loss_sum and fast2.bytes == fast.bytes


def test_head_runs_only_on_scored_positions() -> None:
    gpt = _randomize(_gpt(), seed=1)
    rows: list[int] = []
    original = gpt.logits

    def counting_logits(hidden: torch.Tensor) -> torch.Tensor:
        rows.append(hidden.reshape(-1, hidden.shape[-1]).shape[0])
        return original(hidden)

    gpt.logits = counting_logits
    assert head_split(gpt) is not None
    result = evaluate_sliding(
        gpt, _tokens(71, seed=2), _luts(), window=16, stride=4, batch_seqs=5, device="cpu"
    )
    # 70 targets: the head saw exactly those rows, not the 16 positions of every window.
    assert sum(rows) == result.tokens == 70
    assert len(rows) == math.ceil(len(sliding_windows(70, 16, 4)) / 5)


def _hand_sliding(model: nn.Module, tokens: list[int], window: int, stride: int) -> tuple[float, int]:
    """Per-target NLL in a Python loop: the window holding target p is found by formula and
    run unpadded; bytes from the tables by the rule of docs/protocol.md §2.2."""
    luts = _luts()
    base, space, boundary = (
        luts.base_bytes.tolist(),
        luts.has_leading_space.tolist(),
        luts.is_boundary.tolist(),
    )
    loss, nbytes = 0.0, 0
    for p in range(len(tokens) - 1):
        start = 0 if p < window else ((p - window) // stride + 1) * stride
        logits = model(torch.tensor([tokens[start : p + 1]]))[0, -1].tolist()
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        target, prev = tokens[p + 1], tokens[p]
        loss += log_z - logits[target]
        nbytes += base[target] + (1 if space[target] and not boundary[prev] else 0)
    return loss, nbytes


@pytest.mark.parametrize("stride", [3, 8])
def test_one_layer_model_matches_hand_computation(stride: int) -> None:
    gpt = _randomize(GPTConfig(num_layers=1, model_dim=16, num_heads=2, num_kv_heads=1).build(V), seed=4)
    tokens = _tokens(30, seed=stride)
    loss, nbytes = _hand_sliding(gpt, tokens.tolist(), 8, stride)
    result = evaluate_sliding(gpt, tokens, _luts(), window=8, stride=stride, batch_seqs=2, device="cpu")
    assert (result.tokens, result.bytes) == (29, nbytes)
    assert abs(result.loss_sum - loss) <= TOL * loss
    assert result.val_bpb == pytest.approx(loss / (nbytes * math.log(2)), rel=TOL)


class BadHidden(NoSplitLM):
    """Offers hidden/logits but hidden drops the batch dimension: refused with a clear error."""

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed[ids].reshape(-1, 8)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.head.T


def test_bad_hidden_shape_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"hidden\(\) returned shape \(48, 8\), expected \(3, 16, d\)"):
        evaluate_sliding(BadHidden(), _tokens(41), _luts(), window=16, stride=8, batch_seqs=3, device="cpu")


@pytest.mark.parametrize("n, window, stride, batch_seqs", [SHAPES[0], SHAPES[2], SHAPES[5]])
def test_static_padding_used_for_compile_changes_nothing(
    monkeypatch, model, n, window, stride, batch_seqs
) -> None:
    # On CUDA with compile, every batch is padded to batch_seqs x window (tail rows and the
    # short tail window included); forced here on CPU, where nothing is compiled.
    import harness.pipeline.eval as heval

    tokens = _tokens(n, seed=n + window + stride)
    widths: list[tuple[int, int]] = []
    split = head_split(model)
    monkeypatch.setattr(heval, "_static_shapes", lambda *_: True)
    monkeypatch.setattr(
        heval, "head_split", lambda m: (lambda x: widths.append(tuple(x.shape)) or split[0](x), split[1])
    )
    fast, ref = _pair(model, tokens, window=window, stride=stride, batch_seqs=batch_seqs, compile_model=True)
    _assert_same(fast, ref)
    rows = min(batch_seqs, len(sliding_windows(n - 1, window, stride)))
    assert set(widths) == {(rows, window)}
