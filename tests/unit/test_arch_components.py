"""Tests of the architecture catalogue: the GPT host's knobs and extension points, and every
component module under plugins/arch/ (docs/techniques.md §2-§3, §13).

References are independent where possible: upstream log lines (model_params, XSA,
recycle), hand-computed hash values and formulas, and equivalences with the plain
baseline (a gate at σ(4) equals a scaled W_o, LN scale equals scaled V/fc weights, a
recycled pass equals a hand-unrolled copy of the block).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.api.errors import ConfigError
from harness.api.protocols import ClipOrder
from harness.tools.bundle import collect_modules
from plugins.arch import gpt as gpt_mod
from plugins.arch.bigram_hash import BigramHashConfig, bigram_hash
from plugins.arch.gated_attention import GatedAttentionConfig
from plugins.arch.gpt import (
    CLIP_ORDER_MODULE,
    ORTHOGONAL_INIT_MODULE,
    GPTConfig,
    apply_rotary,
    rope_base_for,
    rotary_tables,
)
from plugins.arch.parallel_residual import ParallelResidualConfig
from plugins.arch.recycled_core import RecycledCoreConfig
from plugins.arch.smeargate import SmearGate, SmearGateConfig
from plugins.arch.upstream_numerics import to_baseline_dtypes
from plugins.arch.value_embed import ValueEmbedConfig
from plugins.arch.value_residual import ValueResidualConfig
from plugins.arch.xsa import XSAConfig, remove_self_value

TINY = dict(model_dim=64, num_heads=4, num_kv_heads=2)
VOCAB = 64
ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "../shared/data/records/track_10min_16mb"


def t1_config(**overrides) -> GPTConfig:
    """T1 (10L Int5-MLP, 2026-03-20) architecture: relu² 3x, BigramHash 10240, SmearGate,
    orthogonal init with the ×1/sqrt(2L) factor on .proj Linears."""
    fields = dict(
        num_layers=10,
        mlp_mult=3.0,
        orthogonal_init=True,
        orthogonal_proj_scale=True,
        components=(BigramHashConfig(buckets=10240, dim=128), SmearGateConfig()),
    )
    return GPTConfig(**{**fields, **overrides})


def p1573_config(**overrides) -> GPTConfig:
    """P1573 (12L RecycledCore, 2026-04-12) architecture as its code (not README) has it."""
    fields = dict(
        num_layers=12,
        mlp_mult=3.0,
        mlp_activation="leaky_relu2",
        rope_dims=16,
        rope_train_seq_len=1024,
        ln_scale=True,
        orthogonal_init=True,
        components=(
            BigramHashConfig(buckets=2048, dim=128),
            SmearGateConfig(),
            ValueEmbedConfig(layers=(10, 11), dim=128),
            ValueResidualConfig(),
            GatedAttentionConfig(),
            XSAConfig(last_n=4),
            RecycledCoreConfig(layers=(3, 4), repeats=1),
        ),
    )
    return GPTConfig(**{**fields, **overrides})


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(*components, seed: int = 0, **overrides) -> gpt_mod.GPT:
    torch.manual_seed(seed)
    fields = {**TINY, "num_layers": 2, "components": tuple(components), **overrides}
    return GPTConfig(**fields).build(VOCAB)


def tiny_p1573(seed: int = 0, **overrides) -> gpt_mod.GPT:
    torch.manual_seed(seed)
    return p1573_config(**{**TINY, **overrides}).build(VOCAB)


def randomize(model: torch.nn.Module, seed: int = 1, std: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def ids(batch: int = 2, seq: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def rms(x: torch.Tensor) -> torch.Tensor:
    # The spec's norm: parameter-free, eps = the dtype's machine epsilon (docs/techniques.md §2.1).
    return x / (x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps).sqrt()


# ---------------------------------------------------------------- counts and names


def test_param_counts_match_upstream_logs():
    with torch.device("meta"):
        counts = [
            GPTConfig().build(1024).num_params(),
            t1_config().build(1024).num_params(),
            p1573_config().build(1024).num_params(),
        ]
    assert counts == [17_059_912, 25_517_137, 29_406_940]
    logs = {
        "2026-03-20_10L_Int5MLP_MuonWD04_SWA50/train_seed1337.log": 25_517_137,
        "2026-04-12_11L_4xMLP_RecycledCore_ParallelResid_Int5/train_seed1337.log": 29_406_940,
    }
    for rel, count in logs.items():
        if (RECORDS / rel).is_file():
            assert f"model_params:{count}\n" in (RECORDS / rel).read_text(encoding="utf-8")


def test_p1573_parameter_names_and_shapes():
    with torch.device("meta"):
        model = p1573_config().build(1024)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    expected = {
        "bigram.embed.weight": (2048, 128),
        "bigram.proj.weight": (512, 128),
        "bigram.scale": (),
        "smear.gate": (512,),
        "ve_shared.embed.weight": (1024, 128),
        "ve_shared.proj.weight": (256, 128),
        "ve_shared.scale": (),
        "ve_layer_scales.0": (1,),
        "ve_layer_scales.1": (1,),
        "recycle.0.a": (512,),
        "recycle.0.b": (512,),
        "recycle.1.a": (512,),
        "recycle.1.b": (512,),
    }
    for i in range(12):
        expected |= {
            f"blocks.{i}.attn.vr_lambda": (2,),
            f"blocks.{i}.attn.attn_gate.weight": (8, 512),
            f"blocks.{i}.attn.attn_gate.bias": (8,),
            f"blocks.{i}.mlp.fc.weight": (1536, 512),
        }
    assert {n: shapes.get(n) for n in expected} == expected
    assert "recycle.2.a" not in shapes and "ve_layer_scales.2" not in shapes
    # Every parameter appears once in the state dict, under its parameter name.
    assert list(model.state_dict()) == [n for n, _ in model.named_parameters()]


def test_baseline_components_empty_is_unchanged():
    a, b = tiny(seed=3), tiny(seed=3)
    names = [n for n, _ in a.named_parameters()]
    per_block = [
        "attn_scale",
        "mlp_scale",
        "resid_mix",
        "attn.q_gain",
        "attn.c_q.weight",
        "attn.c_k.weight",
        "attn.c_v.weight",
        "attn.proj.weight",
        "mlp.fc.weight",
        "mlp.proj.weight",
    ]
    assert names == ["skip_weights", "tok_emb.weight"] + [
        f"blocks.{i}.{n}" for i in range(2) for n in per_block
    ]
    assert tuple(a.blocks[0].mlp.fc.weight.shape) == (128, 64) and tuple(
        a.blocks[0].attn.c_k.weight.shape
    ) == (32, 64)
    explicit = GPTConfig(
        **TINY,
        num_layers=2,
        mlp_activation="relu2",
        rope_dims=0,
        rope_train_seq_len=0,
        ln_scale=False,
        orthogonal_init=False,
        orthogonal_proj_scale=False,
        components=(),
    )
    torch.manual_seed(3)
    c = explicit.build(VOCAB)
    randomize(a)
    randomize(b)
    randomize(c)
    x = ids()
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), c(x))
    assert a.describe() == ["attention_backend:sdpa_native_gqa native_gqa:True"] and a.effective_depth == 2


# ---------------------------------------------------------------- init


def test_component_init_values():
    model = tiny_p1573()
    assert not model.bigram.embed.weight.any() and model.bigram.scale.item() == pytest.approx(0.05)
    assert not model.smear.gate.any()
    assert model.ve_shared.embed.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert model.ve_shared.scale.item() == pytest.approx(0.1)
    assert [p.item() for p in model.ve_layer_scales] == [1.0, 1.0]
    for block in model.blocks:
        assert block.attn.vr_lambda.tolist() == [0.5, 0.5]
        assert not block.attn.attn_gate.weight.any() and block.attn.attn_gate.bias.tolist() == [4.0] * 4
    for mod in model.recycle:
        assert torch.equal(mod.a, torch.ones(64)) and torch.equal(mod.b, torch.zeros(64))
    assert [b.ln_scale for b in model.blocks[:3]] == pytest.approx([1.0, 1 / math.sqrt(2), 1 / math.sqrt(3)])


def _is_orthogonal(w: torch.Tensor, scale: float = 1.0) -> bool:
    small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.allclose(small, scale**2 * torch.eye(small.shape[0]), atol=1e-5)


def test_t1_orthogonal_init_and_proj_scale_trap():
    model = tiny(
        BigramHashConfig(buckets=256), num_layers=2, orthogonal_init=True, orthogonal_proj_scale=True
    )
    # The ×1/sqrt(2L) "muP" factor reaches only bigram.proj (64×128): W Wᵀ = I/(2L).
    assert _is_orthogonal(model.bigram.proj.weight, 1 / math.sqrt(4))
    for block in model.blocks:
        assert _is_orthogonal(block.attn.c_q.weight) and _is_orthogonal(block.mlp.fc.weight)
        assert not block.attn.proj.weight.any() and not block.mlp.proj.weight.any()  # zero flag wins
        assert not _is_orthogonal(block.attn.c_k.weight)  # 32 rows < 64: left at the default init


def test_p1573_orthogonal_init_has_no_proj_scale():
    # d=128 with 2 heads gives kv_dim 64, so the VE proj (64×128) qualifies for the redraw
    # (a bigram of dim == d would have no proj, as upstream).
    model = tiny(
        BigramHashConfig(buckets=256, dim=64),
        ValueEmbedConfig(layers=(1,)),
        GatedAttentionConfig(),
        model_dim=128,
        num_heads=2,
        num_kv_heads=1,
        orthogonal_init=True,
    )
    assert _is_orthogonal(model.bigram.proj.weight) and _is_orthogonal(model.ve_shared.proj.weight)
    assert not model.blocks[0].attn.attn_gate.weight.any()
    no_ortho = tiny(ValueEmbedConfig(layers=(1,)), model_dim=128, num_heads=2, num_kv_heads=1)
    assert not no_ortho.ve_shared.proj.weight.any()  # upstream's module init, without the model pass


@pytest.mark.parametrize("orthogonal", [True, False])
def test_bigram_table_and_proj_both_learn(orthogonal):
    # Trap (docs/techniques.md §13 row 7): a zero table feeds zero to proj, so proj's first
    # gradient is 0; the table's is not (proj is non-zero), and after one step both are alive.
    model = tiny(BigramHashConfig(buckets=256), SmearGateConfig(), orthogonal_init=orthogonal)
    x = ids(seq=17)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)

    def backward():
        opt.zero_grad()
        F.cross_entropy(model(x[:, :-1]).reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()

    backward()
    assert model.bigram.embed.weight.grad.abs().sum() > 0
    assert not model.bigram.proj.weight.grad.any()
    opt.step()
    backward()
    assert model.bigram.embed.weight.grad.abs().sum() > 0 and model.bigram.proj.weight.grad.abs().sum() > 0


def test_zero_bigram_proj_would_be_dead():
    model = tiny(BigramHashConfig(buckets=256))
    with torch.no_grad():
        model.bigram.proj.weight.zero_()
    x = ids(seq=17)
    F.cross_entropy(model(x[:, :-1]).reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()
    assert not model.bigram.embed.weight.grad.any() and not model.bigram.proj.weight.grad.any()


def test_host_names_only_the_modules_its_configuration_runs():
    assert GPTConfig().modules_by_name() == ()
    assert GPTConfig(orthogonal_init=True).modules_by_name() == (ORTHOGONAL_INIT_MODULE,)
    assert t1_config().modules_by_name() == (ORTHOGONAL_INIT_MODULE, CLIP_ORDER_MODULE)
    banks = GPTConfig(orthogonal_init=True, init_order="banks")
    assert banks.modules_by_name() == (ORTHOGONAL_INIT_MODULE, CLIP_ORDER_MODULE)
    # The host's import statements reach none of them (nor a planner's routes): a configuration
    # that does not name them does not bundle them.
    reached = collect_modules(ROOT / "plugins" / "arch" / "gpt.py", ROOT)
    assert "plugins.arch.gpt" in reached
    assert not {ORTHOGONAL_INIT_MODULE, CLIP_ORDER_MODULE, "plugins.arch.recycled_core"} & set(reached)


def test_only_a_host_with_components_or_banks_is_a_clip_order_and_copies_keep_theirs():
    assert not isinstance(tiny(), ClipOrder)
    model = tiny(BigramHashConfig(buckets=256), SmearGateConfig())
    clone = copy.deepcopy(model)
    assert isinstance(clone, ClipOrder)
    names = {id(p): n for n, p in clone.named_parameters()}
    # The copy's own parameters, bigram and smear first as T1 registers them.
    assert [names[id(p)] for p in clone.clip_order()][:6] == [
        "skip_weights",
        "tok_emb.weight",
        "bigram.scale",
        "bigram.embed.weight",
        "bigram.proj.weight",
        "smear.gate",
    ]


# ---------------------------------------------------------------- embeddings


def test_bigram_hash_hand_computed():
    def ref(cur: int, prev: int, n: int) -> int:
        def i32(v: int) -> int:  # upstream multiplies in int32, which wraps
            return (v + 2**31) % 2**32 - 2**31

        return (i32(36313 * cur) ^ i32(27191 * prev)) % (n - 1)

    toks = torch.tensor([[5, 7, 1000, 3], [65535, 60000, 0, 1]])
    got = bigram_hash(toks, 10240).tolist()
    assert got[0] == [10239, ref(7, 5, 10240), ref(1000, 7, 10240), ref(3, 1000, 10240)]
    assert got[1] == [10239, ref(60000, 65535, 10240), ref(0, 60000, 10240), ref(1, 0, 10240)]
    assert ref(7, 5, 10240) == ((36313 * 7) ^ (27191 * 5)) % 10239  # no wrap for small ids
    assert all(0 <= b < 10239 for row in got for b in row[1:])


def test_bigram_is_added_before_the_embedding_norm():
    model = tiny(BigramHashConfig(buckets=256), num_layers=4)
    with torch.no_grad():
        model.bigram.embed.weight.normal_()
    x = ids()
    emb = model.tok_emb.weight[x] + model.bigram.scale * (
        model.bigram.embed.weight[bigram_hash(x, 256)] @ model.bigram.proj.weight.T
    )
    # Zero output projections make the blocks identity maps; skips only rescale the stream.
    assert torch.allclose(model.hidden(x), rms(rms(emb)), atol=1e-5)


def test_smeargate_starts_as_half_mix_after_the_norm():
    gate = SmearGate(8)
    x = torch.randn(2, 5, 8)
    out = gate(x)
    assert torch.allclose(out[:, 0], 0.5 * x[:, 0])
    assert torch.allclose(out[:, 1:], 0.5 * (x[:, 1:] + x[:, :-1]))
    model = tiny(SmearGateConfig(), num_layers=4)
    e = rms(model.tok_emb.weight[ids()])
    smeared = torch.cat((0.5 * e[:, :1], 0.5 * (e[:, 1:] + e[:, :-1])), dim=1)
    assert torch.allclose(model.hidden(ids()), rms(smeared), atol=1e-5)


def test_value_embedding_listed_layers_only_and_computed_once():
    model = tiny(ValueEmbedConfig(layers=(1,)), RecycledCoreConfig(layers=(1,)), num_layers=3)
    randomize(model)
    ve, x = model.ve_shared, ids()
    v = torch.randn(2, 16, 32)
    state = {"ids": x, "host": model}
    expected = v + ve(x) * model.ve_layer_scales[0]
    assert torch.allclose(ve.on_value(v, attn=None, layer=1, recycled=False, state=state), expected)
    assert torch.equal(ve.on_value(v, attn=None, layer=0, recycled=False, state=state), v)
    assert torch.equal(ve.on_value(v, attn=None, layer=1, recycled=True, state=state), v)
    calls = []
    ve.register_forward_hook(lambda *_: calls.append(1))
    model(x)
    assert len(calls) == 1


# ---------------------------------------------------------------- attention add-ons


def test_value_residual_mixes_layer0_values():
    model = tiny(ValueResidualConfig(), num_layers=3)
    vr, state = model.value_residual, {}
    v0, v1 = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    assert torch.equal(vr.on_value(v0, attn=model.blocks[0].attn, layer=0, recycled=False, state=state), v0)
    with torch.no_grad():
        model.blocks[1].attn.vr_lambda.copy_(torch.tensor([0.25, 2.0]))
    out = vr.on_value(v1, attn=model.blocks[1].attn, layer=1, recycled=False, state=state)
    assert torch.allclose(out, 0.25 * v0 + 2.0 * v1)


def test_gated_attention_starts_at_sigmoid4_per_head():
    assert 1 / (1 + math.exp(-4)) == pytest.approx(0.982, abs=5e-4)
    base = tiny(seed=5)
    randomize(base)
    gated = tiny(GatedAttentionConfig(), seed=5)
    missing, unexpected = gated.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == [
        f"blocks.{i}.attn.attn_gate.{p}" for i in range(2) for p in ("bias", "weight")
    ]
    with torch.no_grad():
        for block in base.blocks:
            block.attn.proj.weight.mul_(1 / (1 + math.exp(-4)))  # a constant per-head gate folds into W_o
    x = ids()
    assert torch.allclose(gated(x), base(x), atol=1e-5)


def test_remove_self_value_matches_per_head_loop():
    y, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 2, 8)
    out = remove_self_value(y, v)
    for h in range(4):
        vh = v[:, :, h // 2] / v[:, :, h // 2].norm(dim=-1, keepdim=True)
        ref = y[:, :, h] - (y[:, :, h] * vh).sum(-1, keepdim=True) * vh
        assert torch.allclose(out[:, :, h], ref, atol=1e-6)


def test_xsa_outputs_are_orthogonal_to_own_value_on_active_layers():
    model = tiny(XSAConfig(last_n=2), num_layers=4)
    randomize(model)
    assert model.describe()[-1] == "XSA:last_2 active_layers:[2, 3]"
    seen: dict[int, dict[str, torch.Tensor]] = {}
    for i, block in enumerate(model.blocks):
        seen[i] = {}
        block.attn.c_v.register_forward_hook(lambda m, a, out, i=i: seen[i].__setitem__("v", out))
        block.attn.proj.register_forward_pre_hook(lambda m, a, i=i: seen[i].__setitem__("y", a[0]))
    model(ids())
    for i in range(4):
        y = seen[i]["y"].reshape(2, 16, 4, 16)
        v_hat = F.normalize(seen[i]["v"].reshape(2, 16, 2, 16), dim=-1).repeat_interleave(2, dim=2)
        # Relative to the largest output: position 0 reads only itself, so XSA leaves ~0 there.
        dot = ((y * v_hat).sum(-1).abs().max() / y.norm(dim=-1).max()).item()
        assert (dot < 1e-5) == (i >= 2), (i, dot)


# ---------------------------------------------------------------- depth


def test_recycled_core_log_line_and_depth():
    with torch.device("meta"):
        model = p1573_config().build(1024)
    assert "recycle_layers:[3, 4] repeats:1 effective_depth:14" in model.describe()
    assert "XSA:last_4 active_layers:[8, 9, 10, 11]" in model.describe()
    assert model.effective_depth == 14 and model.recycled_layers == (3, 4)
    with torch.device("meta"):
        twice = GPTConfig(components=(RecycledCoreConfig(layers=(1, 2), repeats=2),)).build(1024)
    assert twice.recycled_layers == (1, 2, 1, 2) and len(twice.recycle) == 4 and twice.effective_depth == 13


def test_recycled_core_route_is_p1573s_layout():
    # P1573's forward, written out: encoder 0..5 pushing skips, the recycled passes of 3 and 4
    # neither pushing nor popping, decoder 6..11 popping.
    core = RecycledCoreConfig(layers=(3, 4)).build(GPTConfig(num_layers=12), VOCAB)
    enc = tuple((i, "enc", -1) for i in range(6))
    dec = tuple((i, "dec", -1) for i in range(6, 12))
    assert core.layer_route(12) == (*enc, (3, "mid", 0), (4, "mid", 1), *dec)
    # A recycled decoder layer runs its extra pass before its own, still between the halves.
    late = RecycledCoreConfig(layers=(4,), repeats=2).build(GPTConfig(num_layers=6), VOCAB)
    assert late.layer_route(6) == (
        (0, "enc", -1), (1, "enc", -1), (2, "enc", -1), (4, "mid", 0), (4, "mid", 1),
        (3, "dec", -1), (4, "dec", -1), (5, "dec", -1),
    )  # fmt: skip


def test_recycled_core_matches_hand_unrolled_copies_and_grads_add():
    model = tiny(RecycledCoreConfig(layers=(1, 2)), num_layers=6)
    randomize(model)
    ref = copy.deepcopy(model)
    copies = [copy.deepcopy(ref.blocks[1]), copy.deepcopy(ref.blocks[2])]
    x = ids()

    def unrolled(m, recycled_blocks):
        h = rms(m.tok_emb(x))
        x0, (cos, sin), skips = h, m.rotary(16, x.device), []
        for b in m.blocks[:3]:
            h = b(h, x0, cos, sin)
            skips.append(h)
        for k, b in enumerate(recycled_blocks):
            h = b(h * m.recycle[k].a + m.recycle[k].b, x0, cos, sin)
        for i, b in enumerate(m.blocks[3:]):
            h = b(h + m.skip_weights[i] * skips.pop(), x0, cos, sin)
        return F.rms_norm(h, (64,))

    w = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(9))
    out = model.hidden(x)
    ref_out = unrolled(ref, copies)
    assert torch.allclose(out, ref_out, rtol=1e-4, atol=1e-4)
    (out * w).sum().backward()
    (ref_out * w).sum().backward()
    for j, layer in enumerate((1, 2)):
        shared = model.blocks[layer].attn.c_q.weight.grad
        first, second = ref.blocks[layer].attn.c_q.weight.grad, copies[j].attn.c_q.weight.grad
        assert first.abs().sum() > 0 and second.abs().sum() > 0
        assert torch.allclose(shared, first + second, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- small knobs


def test_partial_rope_leaves_high_dims_position_free():
    cos, sin = rotary_tables(32, 16, 10000.0, torch.device("cpu"))
    q = torch.randn(64, generator=torch.Generator().manual_seed(0))
    out = apply_rotary(q.expand(1, 1, 32, 64), cos, sin)[0, 0]
    assert torch.equal(out[:, 16:], q[16:].expand(32, 48))  # every position: untouched
    assert not torch.allclose(out[3, :16], out[20, :16])
    angle = 5 * 10000.0 ** (-6 / 16)  # pair (3, 11) at position 5
    assert out[5, 3].item() == pytest.approx(
        q[3].item() * math.cos(angle) + q[11].item() * math.sin(angle), abs=1e-5
    )
    model = tiny(rope_dims=8)
    assert model.rotary(16, torch.device("cpu"))[0].shape == (1, 1, 16, 4)


def test_ntk_rope_base_for_long_sequences():
    cfg = p1573_config()
    assert rope_base_for(cfg, 2048) == pytest.approx(10000 * 2 ** (16 / 14))
    assert rope_base_for(cfg, 2048) == pytest.approx(22_082, abs=1)
    assert rope_base_for(cfg, 1024) == 10000.0 and rope_base_for(GPTConfig(), 4096) == 10000.0
    model = tiny(rope_dims=8, rope_train_seq_len=8)
    cos, _ = model.rotary(16, torch.device("cpu"))
    assert torch.equal(cos, rotary_tables(16, 8, 10000.0 * 2 ** (8 / 6), torch.device("cpu"))[0])


def test_ln_scale_equals_scaled_value_and_fc_weights():
    # QK-norm cancels the factor on q, k; V is linear and relu² is 2-homogeneous, so
    # c·n(x) into a block equals scaling W_v and W_fc by c.
    scaled = tiny(seed=2, num_layers=3, ln_scale=True)
    randomize(scaled)
    plain = tiny(seed=2, num_layers=3)
    plain.load_state_dict(scaled.state_dict())
    with torch.no_grad():
        for i, block in enumerate(plain.blocks):
            block.attn.c_v.weight.mul_(1 / math.sqrt(i + 1))
            block.mlp.fc.weight.mul_(1 / math.sqrt(i + 1))
    assert torch.allclose(scaled(ids()), plain(ids()), atol=1e-4)


def test_leaky_relu2_is_quarter_square_on_negatives():
    model = tiny(mlp_activation="leaky_relu2", mlp_mult=1.0)
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        mlp.fc.weight.copy_(torch.eye(64))
        mlp.proj.weight.copy_(torch.eye(64))
    u = torch.linspace(-3, 3, 64)
    assert torch.allclose(mlp(u), torch.where(u > 0, u**2, 0.25 * u**2))


def test_parallel_residual_block():
    model = tiny(ParallelResidualConfig(last_n=1), num_layers=3)
    randomize(model)
    assert [b.parallel for b in model.blocks] == [False, False, True]
    block = model.blocks[2]
    x, x0 = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    cos, sin = model.rotary(16, x.device)
    x_in = block.resid_mix[0] * x + block.resid_mix[1] * x0
    h = rms(x_in)
    expected = x_in + block.attn_scale * block.attn(h, cos, sin) + block.mlp_scale * block.mlp(h)
    assert torch.allclose(block(x, x0, cos, sin), expected, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- whole models


@pytest.mark.parametrize("build", ["t1", "p1573"])
def test_record_models_are_causal_and_every_parameter_learns(build):
    torch.manual_seed(0)
    model = t1_config(**TINY, num_layers=4).build(VOCAB) if build == "t1" else tiny_p1573()
    randomize(model)
    x = ids()
    y = x.clone()
    y[:, 8:] = (y[:, 8:] + 1) % VOCAB
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-5) and not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-3)
    F.cross_entropy(a.reshape(-1, VOCAB), x.roll(-1, 1).reshape(-1)).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    # Layer 0 defines v0 and never mixes, so its λ never gets a gradient (as upstream).
    assert dead == (["blocks.0.attn.vr_lambda"] if build == "p1573" else [])


def test_component_order_is_fixed_not_listed():
    listed = p1573_config().components
    a = tiny_p1573(components=tuple(reversed(listed)))
    b = tiny_p1573()
    assert [c.slot for c in a.components] == [
        "bigram",
        "smear",
        "ve_shared",
        "value_residual",
        "xsa",
        "gated_attention",
        "recycle",
    ]
    randomize(a)
    randomize(b)
    assert torch.equal(a(ids()), b(ids()))


def test_attention_probe_falls_back_and_matches(monkeypatch):
    model = tiny_p1573()
    randomize(model)
    x = ids()
    assert model.attention_backend == "sdpa_native_gqa"
    native = model(x)
    real = F.scaled_dot_product_attention

    def no_gqa(*args, enable_gqa=False, **kwargs):
        if enable_gqa:
            raise TypeError("scaled_dot_product_attention() got an unexpected keyword argument 'enable_gqa'")
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", no_gqa)
    assert model.probe_attention() == "sdpa_repeat_kv" and model.attention_backend == "sdpa_repeat_kv"
    assert not any(b.attn.native_gqa for b in model.blocks)
    assert torch.allclose(model(x), native, atol=1e-5)
    assert tiny(num_heads=4, num_kv_heads=4).attention_backend == "sdpa_mha"


def test_moving_the_model_reprobes(monkeypatch):
    model = tiny()
    monkeypatch.setattr(gpt_mod, "_sdpa_gqa_works", lambda *a: False)
    model.float()  # same device: no probe
    assert model.attention_backend == "sdpa_native_gqa"
    model.to("meta")
    assert model.attention_backend == "sdpa_repeat_kv"


def test_compiles_fullgraph():
    model = tiny_p1573()
    randomize(model)
    x = ids()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_bf16_dtypes_keep_embedding_tables_bf16():
    model = to_baseline_dtypes(tiny_p1573())
    bf16 = sorted(n for n, p in model.named_parameters() if p.dtype == torch.bfloat16)
    assert bf16 == ["bigram.embed.weight", "tok_emb.weight", "ve_shared.embed.weight"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(ids())).all()


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(rope_dims=7), "rope_dims"),
        (dict(rope_dims=32), "rope_dims"),
        (dict(mlp_activation="gelu"), "mlp_activation"),
        (dict(ln_scale=1), "ln_scale"),
        (dict(components=[SmearGateConfig()]), "components"),
        (dict(components=(SmearGateConfig(), SmearGateConfig())), "twice"),
        (dict(components=("smear",)), "components"),
        (dict(components=(ValueEmbedConfig(layers=(2,)),)), "value_embed.layers"),
        (dict(components=(XSAConfig(last_n=3),)), "xsa.last_n"),
        (dict(components=(RecycledCoreConfig(layers=(0, 5)),)), "recycled_core.layers"),
        (dict(components=(RecycledCoreConfig(repeats=0, layers=(1,)),)), "recycled_core.repeats"),
        (dict(components=(BigramHashConfig(buckets=1),)), "bigram_hash.buckets"),
        (dict(components=(ParallelResidualConfig(last_n=0),)), "parallel_residual.last_n"),
    ],
)
def test_bad_configs_are_refused(overrides, field):
    with pytest.raises(ConfigError, match=field):
        GPTConfig(**{**TINY, "num_layers": 2, **overrides})
