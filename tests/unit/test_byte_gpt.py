"""Tests of the reference byte GPT: the ``byte_gpt`` arch (plugins/arch/byte_gpt.py), the
``adamw`` optimizer (plugins/optim/adamw.py), the reference LR schedule expressed by
``cosine`` (plugins/schedule/cosine.py) and the ``byte_gpt`` submission.

References are independent of the code under test: a model assembled from torch's own
``nn.MultiheadAttention`` (additive -inf causal mask, as the reference trainer), the
parameter-count formula 12d² + 13d per block, the 3B card's 3,149,030,400, hand-computed
AdamW updates and the reference's LR formula written out here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.api.errors import ConfigError
from harness.api.protocols import LanguageModel
from harness.pipeline.artifact import config_to_json, write_artifact
from harness.pipeline.plugin_manager import full_manager, run_manager
from harness.pipeline.submission import build_submission_config
from plugins.arch.byte_gpt import ByteGPTConfig, block_params, count_params, ladder
from plugins.optim.adamw import AdamWConfig
from plugins.schedule.cosine import CosineConfig
from tests.conftest import ROOT

TINY = dict(d_model=64, n_layers=2, n_heads=4, block_size=32)
SUBMISSION = ROOT / "submissions" / "byte_gpt"
CODE_ALLOWANCE = 150_000


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return ByteGPTConfig(**{**TINY, **overrides}).build(256)


def ids(batch: int = 2, seq: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, seq), generator=torch.Generator().manual_seed(seed))


def loss_of(model, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), x.roll(-1, 1).reshape(-1))


# ----------------------------------------------------------------------------- model


def test_registered_and_a_language_model():
    registry = full_manager(entrypoints=False).registry
    assert registry.get("arch", "byte_gpt").config_cls is ByteGPTConfig
    assert registry.get("optimizer", "adamw").config_cls is AdamWConfig
    model = tiny()
    assert isinstance(model, LanguageModel) and model.vocab_size == 256


def test_forward_backward_shapes_and_hidden_logits_split():
    model = tiny()
    x = ids()
    logits = model(x)
    assert logits.shape == (2, 16, 256) and model.hidden(x).shape == (2, 16, 64)
    assert torch.equal(model.logits(model.hidden(x)), logits)
    loss_of(model, x).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_causal():
    model = tiny().eval()
    x = ids(1, 20)
    y = x.clone()
    y[0, 12] = (y[0, 12] + 1) % 256
    a, b = model(x), model(y)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-4)


def _reference_model(model, cfg: ByteGPTConfig) -> nn.Module:
    """The reference trainer's structure from torch's building blocks, with ``model``'s weights."""
    d = cfg.d_model

    class RefBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, cfg.n_heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x, mask):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    ref = nn.Module()
    ref.blocks = nn.ModuleList(RefBlock() for _ in range(cfg.n_layers))
    ref.ln_f = nn.LayerNorm(d)
    with torch.no_grad():
        for rb, b in zip(ref.blocks, model.blocks, strict=True):
            rb.attn.in_proj_weight.copy_(b.attn.in_proj.weight)
            rb.attn.in_proj_bias.copy_(b.attn.in_proj.bias)
            rb.attn.out_proj.load_state_dict(b.attn.out_proj.state_dict())
            rb.ln1.load_state_dict(b.ln_1.state_dict())
            rb.ln2.load_state_dict(b.ln_2.state_dict())
            rb.mlp[0].load_state_dict(b.mlp[0].state_dict())
            rb.mlp[2].load_state_dict(b.mlp[2].state_dict())
        ref.ln_f.load_state_dict(model.ln_f.state_dict())
    return ref


def test_matches_a_multihead_attention_reference():
    """SDPA(is_causal) == nn.MultiheadAttention with an additive upper-triangle -inf mask."""
    model = tiny(seed=3)
    with torch.no_grad():  # non-zero biases and LN affines, so every term is exercised
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    cfg = model.cfg
    ref = _reference_model(model, cfg).eval()
    model.eval()
    x = ids(2, 24, seed=5)
    T = x.size(1)
    mask = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
    with torch.no_grad():
        h = model.tok_emb(x) + model.pos_emb(torch.arange(T))[None]
        for blk in ref.blocks:
            h = blk(h, mask)
        expected = ref.ln_f(h) @ model.tok_emb.weight.T
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_head_is_tied_to_the_embedding():
    model = tiny()
    assert model.head_weight is model.tok_emb.weight
    assert model.head_weight.data_ptr() == model.tok_emb.weight.data_ptr()
    assert not any("head" in n for n in model.state_dict())  # stored (and exported) once
    with torch.no_grad():
        model.tok_emb.weight[7].add_(1.0)  # moves both the input row and the output column
    h = model.hidden(ids())
    assert torch.allclose(model.logits(h)[..., 7], h @ model.tok_emb.weight[7], atol=1e-5, rtol=1e-6)


def test_init_statistics():
    torch.manual_seed(0)
    cfg = ByteGPTConfig(d_model=128, n_layers=2, n_heads=4, block_size=256)
    model = cfg.build(256)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
        elif ".ln_" in name or name.startswith("ln_f"):
            assert torch.equal(p, torch.ones_like(p)), name
        elif "in_proj" in name:  # nn.MultiheadAttention's xavier-uniform, bound sqrt(6 / (d + 3d))
            bound = math.sqrt(6 / (128 + 3 * 128))
            assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound, name
            assert abs(p.std().item() - bound / math.sqrt(3)) < 0.03 * bound, name
        else:  # every Linear and Embedding weight: N(0, 0.02)
            assert abs(p.mean().item()) < 0.002 and abs(p.std().item() - 0.02) < 0.001, name
    normal = replace(cfg, in_proj_init="normal").build(256)
    w = normal.blocks[0].attn.in_proj.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.002


def test_grad_checkpointing_same_loss_and_grads():
    plain, ckpt = tiny(seed=1), tiny(seed=1, grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = ids(2, 32, seed=2)
    a, b = loss_of(plain, x), loss_of(ckpt, x)
    a.backward()
    b.backward()
    assert abs(a.item() - b.item()) <= 1e-6
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=0), name


def test_grad_checkpointing_really_recomputes():
    """Checkpointed blocks run forward again in backward (their first op, ln_1, is counted:
    the recompute stops early once the saved tensors are rebuilt)."""
    calls = []
    model = tiny(grad_checkpointing=True)
    model.blocks[0].ln_1.register_forward_hook(lambda *a: calls.append(1))
    loss_of(model, ids()).backward()
    assert len(calls) == 2
    calls.clear()
    with torch.no_grad():
        model(ids())
    assert len(calls) == 1
    calls.clear()
    plain = tiny()
    plain.blocks[0].ln_1.register_forward_hook(lambda *a: calls.append(1))
    loss_of(plain, ids()).backward()
    assert len(calls) == 1


@pytest.mark.parametrize("checkpointing", [False, True])
def test_compiles_as_one_graph(checkpointing):
    """The harness compiles with fullgraph=True on CUDA; tracing (aot_eager) must not break."""
    model = tiny(seed=4, grad_checkpointing=checkpointing)
    compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")
    x = ids(2, 16, seed=6)
    loss_of(compiled, x).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss_of(model, x).backward()
    assert all(torch.allclose(g, p.grad, atol=1e-6) for g, p in zip(grads, model.parameters(), strict=True))


def test_too_long_input_names_block_size():
    model = tiny()
    model(ids(1, 32))
    with pytest.raises(ConfigError, match="block_size"):
        model(ids(1, 33))


@pytest.mark.parametrize(
    ("train_len", "eval_len", "bad"),
    [
        (512, 0, None),
        (512, 512, None),
        (256, 0, None),
        (1024, 0, "train.train_seq_len"),
        (512, 1024, "eval.eval_seq_len"),
    ],
)
def test_configure_checks_lengths_against_block_size(train_len, eval_len, bad):
    run = build_submission_config(SUBMISSION)
    run = replace(
        run, train=replace(run.train, train_seq_len=train_len), eval=replace(run.eval, eval_seq_len=eval_len)
    )
    hook = run_manager(["plugins.arch.byte_gpt"]).hook
    if bad is None:
        hook.pg_configure(run=run)
    else:
        with pytest.raises(ConfigError, match=rf"{bad}.*block_size=512"):
            hook.pg_configure(run=run)


def test_configure_ignores_other_architectures():
    run = build_submission_config(ROOT / "submissions" / "baseline")
    assert run.train.train_seq_len > 512  # would be refused if it were checked
    run_manager(["plugins.arch.byte_gpt"]).hook.pg_configure(run=run)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(d_model=0), "d_model"),
        (dict(d_model=65), "divisible by n_heads"),
        (dict(n_heads=True), "n_heads"),
        (dict(dropout=1.0), "dropout"),
        (dict(in_proj_init="xavier"), "in_proj_init"),
        (dict(init_std=-1.0), "init_std"),
    ],
)
def test_bad_config_is_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        ByteGPTConfig(**{**TINY, **overrides})


# ----------------------------------------------------------------------------- parameter counts


def test_block_has_12d2_plus_13d_params():
    for d in (64, 96):
        block = ByteGPTConfig(d_model=d, n_layers=1, n_heads=4).build(256).blocks[0]
        assert sum(p.numel() for p in block.parameters()) == 12 * d * d + 13 * d == block_params(d)


@pytest.mark.parametrize(
    "cfg", [ByteGPTConfig(**TINY), ByteGPTConfig(d_model=96, n_layers=3, n_heads=3, mlp_ratio=2)]
)
def test_count_params_matches_the_built_model(cfg):
    torch.manual_seed(0)
    assert (
        count_params(cfg, 256)
        == cfg.build(256).num_params()
        == sum(p.numel() for p in cfg.build(256).parameters())
    )


@pytest.mark.parametrize(
    ("rung", "expected"),
    # 3B: the card's number; 85m: the Lane-G ref card's 85.6M;
    # 16mb: 12 x (12·384² + 13·384) + 384·(256 + 512 + 2).
    [("3b", 3_149_030_400), ("85m", 85_645_824), ("16mb", 12 * (12 * 384**2 + 13 * 384) + 384 * 770)],
)
def test_ladder_param_counts_on_meta(rung, expected):
    with torch.device("meta"):
        model = ladder(rung).build(256)
    assert model.tok_emb.weight.is_meta
    assert sum(p.numel() for p in model.parameters()) == expected
    assert (ladder(rung).d_model, ladder(rung).block_size) == {
        "3b": (2560, 512),
        "85m": (768, 512),
        "16mb": (384, 512),
    }[rung]


def test_ladder_default_and_unknown_rung():
    assert ladder("16mb") == ByteGPTConfig()
    assert ladder("3b").n_layers == 40 and ladder("3b").n_heads == 20
    with pytest.raises(ConfigError, match="3b"):
        ladder("7b")


@pytest.mark.slow
def test_default_random_init_fits_the_budget(tmp_path, request):
    """The submission's own export of the random-init 16mb model leaves room for the code."""
    # ~25 s of Brotli-11 over 15 MB on 2 cores: opt-in, like the full-size init-parity tests. The
    # published smoke run (runs/smoke/submission.json) shows a trained model's bytes every run.
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("exports the full-size model with Brotli-11: select it with -m slow")
    run = build_submission_config(SUBMISSION)
    assert run.model == ladder("16mb")
    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in run.model.build(run.data.vocab_size).state_dict().items()}
    quant, codec = run.quantizer.build(), run.compressor.build()
    info = write_artifact(
        tmp_path / "a.pgolf",
        quant.quantize(state),
        quantizer_name="mixed",
        quantizer_config=config_to_json(run.quantizer),
        compressor=codec,
        compressor_name="brotli",
        compressor_config=config_to_json(run.compressor),
    )
    assert info.bytes_on_disk == os.path.getsize(tmp_path / "a.pgolf")
    assert info.bytes_on_disk <= 16_000_000 - CODE_ALLOWANCE, info.bytes_on_disk


# ----------------------------------------------------------------------------- AdamW


def _ln_and_matrix(model):
    return model.blocks[0].ln_1.weight, model.blocks[0].mlp[0].weight


@pytest.mark.parametrize("decay_all", [True, False])
def test_adamw_decays_layernorm_only_when_decay_all(decay_all):
    model = tiny()
    lr, wd, scale = 1e-2, 0.1, 0.5
    opt = AdamWConfig(lr=lr, weight_decay=wd, decay_all=decay_all).build(model)
    ln, mat = _ln_and_matrix(model)
    ln0, mat0 = ln.detach().clone(), mat.detach().clone()
    for p in model.parameters():  # zero gradients: Adam's step is 0, only the decay moves p
        p.grad = torch.zeros_like(p)
    opt.step(1, scale)
    factor = 1 - lr * scale * wd
    assert torch.allclose(mat, mat0 * factor, atol=1e-9, rtol=0)
    assert torch.allclose(ln, ln0 * factor if decay_all else ln0, atol=1e-9, rtol=0)
    assert not torch.equal(ln, ln0) if decay_all else torch.equal(ln, ln0)


def test_adamw_groups_split_by_dimension():
    model = tiny()
    groups = {g["name"]: g for g in AdamWConfig(decay_all=False).build(model).optimizer.param_groups}
    assert all(p.ndim >= 2 for p in groups["decay"]["params"]) and groups["decay"]["weight_decay"] == 0.1
    assert (
        all(p.ndim == 1 for p in groups["no_decay"]["params"]) and groups["no_decay"]["weight_decay"] == 0.0
    )
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    one = AdamWConfig().build(model).optimizer.param_groups
    assert len(one) == 1 and len(one[0]["params"]) == len(list(model.parameters()))


def test_adamw_first_step_by_hand():
    """Step 1: m̂ = g, v̂ = g², so p -= lr·s·g/(|g| + eps) after decaying p by lr·s·wd."""
    model = tiny()
    lr, wd, eps, scale = 1e-3, 0.1, 1e-8, 0.25
    opt = AdamWConfig(lr=lr, weight_decay=wd, eps=eps).build(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_of(model, ids()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    opt.step(1, scale)
    for n, p in model.named_parameters():
        g = grads[n]
        expected = before[n] * (1 - lr * scale * wd) - lr * scale * g / (g.abs() + eps)
        assert torch.allclose(p, expected, atol=1e-7, rtol=0), n


def test_adamw_state_roundtrip_restores_the_next_step():
    model = tiny()
    opt = AdamWConfig(lr=1e-2).build(model)
    x = ids()

    def step(k):
        opt.zero_grad()
        loss_of(model, x).backward()
        opt.step(k, 1.0)

    step(1)
    saved_model, saved_opt = {k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()
    step(2)
    after = {k: v.clone() for k, v in model.state_dict().items()}
    step(3)
    model.load_state_dict(saved_model)
    opt.load_state_dict(saved_opt)
    step(2)
    assert all(torch.equal(after[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="adamw"):
        opt.load_state_dict({"muon": {}})


def test_adamw_describe_and_bad_values():
    lines = AdamWConfig(decay_all=False).build(tiny()).describe()
    assert len(lines) == 2 and "group:decay" in lines[0] and "weight_decay:0.1" in lines[0]
    assert "group:no_decay" in lines[1] and "weight_decay:0 " in lines[1]
    for bad, field in (
        (dict(lr=-1.0), "lr"),
        (dict(betas=(0.9, 1.0)), "betas"),
        (dict(decay_all=1), "decay_all"),
    ):
        with pytest.raises(ConfigError, match=field):
            AdamWConfig(**bad)


# ----------------------------------------------------------------------------- schedule


def reference_lr(step: int, lr: float, warmup: int, steps: int) -> float:
    """docs/techniques.md §11.1: linear warm-up, then lr·(0.45·(1 + cos πp) + 0.05) over the rest."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (0.45 * (1 + math.cos(math.pi * p)) + 0.05)


REF_SCHEDULE = CosineConfig(warmup_steps=100, peak_scale=0.95, min_scale=0.05, decay_after_warmup=True)


@pytest.mark.parametrize("step", [0, 1, 49, 98, 99, 100, 101, 250, 550, 999, 1000, 1200])
def test_schedule_matches_the_reference_in_steps(step):
    schedule = replace(REF_SCHEDULE, use_wallclock=False).build()
    got = 3e-4 * schedule(step, 123.0, iterations=1000, max_wallclock_ms=9e9)
    assert got == pytest.approx(reference_lr(min(step, 1000), 3e-4, 100, 1000), rel=1e-12, abs=1e-18)


def test_schedule_hand_values():
    schedule = replace(REF_SCHEDULE, use_wallclock=False).build()
    kw = dict(iterations=1100, max_wallclock_ms=0.0)
    assert schedule(99, 0.0, **kw) == 1.0  # end of the ramp
    assert schedule(100, 0.0, **kw) == pytest.approx(0.95)  # the step down after warm-up
    assert schedule(600, 0.0, **kw) == pytest.approx(0.5)  # p = 0.5
    assert schedule(1100, 0.0, **kw) == pytest.approx(0.05)  # the floor


def test_schedule_on_the_wallclock():
    """10 ms steps under a 10 s cap: warm-up is estimated at 100·10 ms, so p = (t - 1 s)/(9 s)."""
    schedule = REF_SCHEDULE.build()
    kw = dict(iterations=20_000, max_wallclock_ms=10_000.0)
    assert schedule(50, 500.0, **kw) == pytest.approx(51 / 100)
    assert schedule(100, 1000.0, **kw) == pytest.approx(0.95)
    assert schedule(550, 5500.0, **kw) == pytest.approx(0.5)
    assert schedule(775, 7750.0, **kw) == pytest.approx(0.05 + 0.45 * (1 + math.cos(0.75 * math.pi)))
    assert schedule(1000, 10_000.0, **kw) == pytest.approx(0.05)
    values = [schedule(s, 10.0 * s, **kw) for s in range(100, 1001)]
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))


def test_schedule_defaults_unchanged_and_bad_peak():
    plain = CosineConfig(warmup_steps=10, min_scale=0.1, use_wallclock=False).build()
    for step in (0, 5, 20, 60, 100):
        expected = min(min((step + 1) / 10, 1.0), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 100)))
        assert plain(step, 0.0, iterations=100, max_wallclock_ms=0.0) == pytest.approx(expected, abs=1e-15)
    with pytest.raises(ConfigError, match="peak_scale"):
        CosineConfig(min_scale=0.5, peak_scale=0.4)


# ----------------------------------------------------------------------------- submission


def test_submission_config_is_the_reference_recipe():
    run = build_submission_config(SUBMISSION)
    assert run.data.vocab_size == 256 and run.data.default_variant == "bytes"
    assert run.optimizer == AdamWConfig(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, decay_all=True)
    assert run.schedule == REF_SCHEDULE
    assert run.train.grad_clip_norm == 1.0 and run.train.train_seq_len == 512 == run.eval.eval_seq_len
    assert run.eval.eval_stride == 64
    assert len((SUBMISSION / "train_gpt.py").read_text().splitlines()) < 120


def test_submission_pipeline_runs_on_sp1024_data(tmp_path, default_dataset):
    """The whole harness path (configure, train, export, roundtrip, sliding eval, report) with
    the byte GPT, AdamW, the reference cosine and the int6 + brotli export, on the sp1024 data
    (the model is vocabulary-agnostic), so it stays tested independently of the byte data."""
    from harness.pipeline.runner import run

    sub = tmp_path / "byte_gpt"
    shutil.copytree(SUBMISSION, sub, ignore=shutil.ignore_patterns("runs", "dist"))
    sets = {
        "data.vocab_size": "1024",
        "data.default_variant": "sp1024",
        "model.n_heads": "4",
        "model.d_model": "64",
        "model.n_layers": "2",
        "model.block_size": "128",
        "train.iterations": "3",
        "train.train_batch_tokens": "512",
        "train.train_seq_len": "128",
        "train.warmup_steps": "0",
        "train.val_loss_every": "0",
        "train.train_log_every": "1",
        "eval.eval_seq_len": "128",
        "eval.val_batch_size": "512",
        "eval.val_max_tokens": "512",
        "eval.eval_batch_seqs": "8",
    }
    record = run(build_submission_config(sub), submission_dir=sub, run_id="t", sets=sets)
    assert (
        record["steps"] == 3
        and record["valid"]
        and record["quantizer"] == "int6"
        and record["compressor"] == "brotli"
    )
    assert record["sliding_val_bpb"] is not None and math.isfinite(record["val_bpb"])
    events = [json.loads(line) for line in (sub / "runs" / "t" / "metrics.jsonl").read_text().splitlines()]
    lr = {e["step"]: e["lr_scale"] for e in events if e.get("event") == "train"}
    # The CPU smoke profile shortens the 100-step warm-up to 5 steps: step k runs at k/5.
    assert [lr[k] for k in (1, 2, 3)] == pytest.approx([1 / 5, 2 / 5, 3 / 5])
    log = (sub / "runs" / "t" / "train.log").read_text()
    assert "byte_gpt: d_model:64 n_layers:2" in log and "optimizer:adamw group:decay" in log
    too_long = dict(sets, **{"train.train_seq_len": "256"})
    with pytest.raises(ConfigError, match="block_size=128"):
        run(build_submission_config(sub), submission_dir=sub, run_id="u", sets=too_long)
