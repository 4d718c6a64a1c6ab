"""Late QAT (plugins/algorithms/late_qat.py): the fake-quantized forward against a numpy
reference, the straight-through gradient, alpha off = the plain model bit for bit, exactly the
quantizer's tensors parametrized, the optimizer's Parameters kept, state-dict keys through
priming and export, the switch after the threshold, a compiled model that changes output on
``alpha.fill_(1)`` without recompiling, and the averagers combined with it in any order."""

from __future__ import annotations

import copy
import re
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.api.errors import ConfigError
from harness.api.protocols import QTensor
from harness.pipeline.plugin_manager import PluginManager
from harness.pipeline.runlog import RunLogger
from plugins.algorithms.late_qat import LateQATConfig
from plugins.arch.gpt import GPTConfig
from plugins.averaging.ema import EMAConfig
from plugins.averaging.swa import SWAConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config

VOCAB = 64
TINY = GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)


class RowQuantizer:
    """A stand-in quantizer: block matrices with >= 4096 entries get ``bits``-bit rows
    (c_q, attn.proj, mlp.fc, mlp.proj of the tiny GPT); everything else stays float."""

    name = "rowq"

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def _quantized(self, name: str, t: torch.Tensor) -> bool:
        return t.ndim == 2 and name.startswith("blocks.") and t.numel() >= 4096

    def qat_bits(self, name: str, tensor: torch.Tensor) -> int | None:
        return self.bits if self._quantized(name, tensor) else None

    def quantize(self, state_dict: dict[str, torch.Tensor]) -> dict[str, QTensor]:
        return {
            n: QTensor("row" if self._quantized(n, t) else "passthrough", {"w": t})
            for n, t in state_dict.items()
        }

    def dequantize(self, tensors: dict[str, QTensor]) -> dict[str, torch.Tensor]:  # pragma: no cover
        return {n: q.arrays["w"] for n, q in tensors.items()}


@dataclass(frozen=True, kw_only=True)
class RowQuantizerConfig:
    bits: int = 6
    """Bit width of the quantized rows."""

    def build(self) -> Any:
        return RowQuantizer(self.bits)


def spread_model(seed: int = 0, vocab: int = VOCAB) -> torch.nn.Module:
    """The tiny GPT with non-zero output projections and rows of very different scales, so
    fake quantization (floor 1/c included) visibly changes the weights."""
    torch.manual_seed(seed)
    model = TINY.build(vocab)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and name.startswith("blocks."):
                p.copy_(torch.randn_like(p) * torch.logspace(-2, 0.5, p.shape[0])[:, None])
    return model


def fake_ctx(model, quantizer_cfg=None, run_dir=None) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        model=model,
        config=types.SimpleNamespace(quantizer=quantizer_cfg or RowQuantizerConfig()),
        log=RunLogger(run_dir, echo=False),
        step=0,
        lr_scale=1.0,
        averaging=None,
        notes={},
    )


def attach(model, cfg: LateQATConfig | None = None, quantizer_cfg=None, run_dir=None):
    plugin = (cfg or LateQATConfig()).build()
    ctx = fake_ctx(model, quantizer_cfg, run_dir)
    plugin.pg_train_start(ctx)
    return plugin, ctx


def numpy_fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Independent reference: row by row, Δ = max(max|w_r|/c, 1/c), clamp(round(w/Δ), -c-1, c)·Δ."""
    c = 2 ** (bits - 1) - 1
    a = w.detach().numpy().astype(np.float32)
    out = np.empty_like(a)
    for r in range(a.shape[0]):
        step = max(np.float32(np.abs(a[r]).max()) / np.float32(c), np.float32(1.0 / c))
        out[r] = np.clip(np.round(a[r] / step), -c - 1, c) * step
    return torch.from_numpy(out)


def reference_model(plain: torch.nn.Module, names: list[str], bits: int) -> torch.nn.Module:
    """``plain`` with the named weights replaced by their numpy fake-quantized values."""
    ref = copy.deepcopy(plain)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].copy_(numpy_fake_quant(params[name], bits))
    return ref


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(seed))
    return x, x.roll(-1, 1)


def loss_of(model, x, y) -> torch.Tensor:
    return F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))


# -- what gets parametrized ------------------------------------------------------------------
def test_exactly_the_quantized_tensors_are_parametrized():
    model = spread_model()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plugin, _ = attach(model)
    quantized = {n for n, q in RowQuantizer(6).quantize(state).items() if q.kind != "passthrough"}
    assert len(quantized) == 8 and set(plugin.names) == quantized
    parametrized = {n for n, m in model.named_modules() if torch.nn.utils.parametrize.is_parametrized(m)}
    assert parametrized == {n.rpartition(".")[0] for n in quantized}


def test_int8_quantizer_tensors_are_parametrized():
    from plugins.quant.int8 import Int8Quantizer

    if not hasattr(Int8Quantizer, "qat_bits"):
        pytest.skip("plugins.quant.int8 has no qat_bits yet (being added in parallel)")
    torch.manual_seed(0)
    model = TINY.build(1100)  # tok_emb 1100 x 64 > 65,536 entries: the only tensor int8 quantizes
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plugin, _ = attach(model, quantizer_cfg=Int8Config())
    quantized = {n for n, q in Int8Config().build().quantize(state).items() if q.kind != "passthrough"}
    assert quantized and set(plugin.names) == quantized


# -- forward and gradient --------------------------------------------------------------------
def test_alpha_on_forward_equals_the_fake_quantized_weights():
    plain = spread_model()
    model = copy.deepcopy(plain)
    plugin, _ = attach(model)
    ref = reference_model(plain, plugin.names, 6)
    x, _ = batch()
    plugin.alpha.fill_(1.0)
    with torch.no_grad():
        got, want, raw = model(x), ref(x), plain(x)
        for name in plugin.names:
            module = model.get_submodule(name.rpartition(".")[0])
            # w + (fq - w) is fq up to one rounding of the subtraction/addition.
            torch.testing.assert_close(
                module.weight,
                numpy_fake_quant(module.parametrizations.weight.original, 6),
                rtol=1e-6,
                atol=1e-7,
            )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - raw).abs().max() > 1e-2  # the quantization is visible, so the check can fail


def test_gradient_is_straight_through():
    plain = spread_model()
    model = copy.deepcopy(plain)
    plugin, _ = attach(model)
    plugin.alpha.fill_(1.0)
    ref = reference_model(plain, plugin.names, 6)
    x, y = batch()
    loss_of(model, x, y).backward()
    loss_of(ref, x, y).backward()
    loss_of(plain, x, y).backward()
    ref_params, plain_params = dict(ref.named_parameters()), dict(plain.named_parameters())
    for name in plugin.names:
        original = model.get_submodule(name.rpartition(".")[0]).parametrizations.weight.original
        # d loss / d original == d loss / d (fake-quantized weight): the STE passes it through.
        torch.testing.assert_close(original.grad, ref_params[name].grad, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(original.grad, plain_params[name].grad, rtol=1e-3, atol=1e-6)


def test_alpha_off_is_bit_identical_to_the_plain_model():
    plain = spread_model()
    model = copy.deepcopy(plain)
    plugin, _ = attach(model)
    assert float(plugin.alpha) == 0.0
    x, y = batch()
    loss_of(model, x, y).backward()
    loss_of(plain, x, y).backward()
    assert torch.equal(model(x), plain(x))
    plain_params = dict(plain.named_parameters())
    for name, p in model.named_parameters():
        key = name.replace(".parametrizations.weight.original", ".weight")
        assert torch.equal(p.grad, plain_params[key].grad), name


# -- training integration ----------------------------------------------------------------------
def test_optimizer_keeps_updating_the_same_parameters():
    model = spread_model()
    optimizer = MuonConfig().build(model)  # built before pg_train_start, as in the runner
    before = {n: p for n, p in model.named_parameters()}
    plugin, _ = attach(model)
    opt_params = {
        id(p) for opt in optimizer.optimizers.values() for g in opt.param_groups for p in g["params"]
    }
    for name in plugin.names:
        module = model.get_submodule(name.rpartition(".")[0])
        original = module.parametrizations.weight.original
        assert original is before[name] and id(original) in opt_params
    x, y = batch()
    snapshot = {n: p.detach().clone() for n, p in before.items()}
    loss_of(model, x, y).backward()
    optimizer.step(1, 1.0)
    for name in plugin.names:
        assert not torch.equal(before[name], snapshot[name]), name  # updated in place
        module = model.get_submodule(name.rpartition(".")[0])
        assert torch.equal(module.weight, before[name])  # alpha off: the live weight is the updated one


def test_state_dict_survives_priming_and_export_gets_original_names():
    plain = spread_model()
    original_keys = list(plain.state_dict().keys())
    model = copy.deepcopy(plain)
    optimizer = MuonConfig().build(model)
    plugin, ctx = attach(model)
    keys = list(model.state_dict().keys())
    assert any(k.endswith("parametrizations.weight.original") for k in keys)
    assert not any("alpha" in k for k in keys)  # the switch is not part of the weights
    # The trainer's compile priming: save, take real steps, restore.
    saved = copy.deepcopy(model.state_dict())
    x, y = batch()
    loss_of(model, x, y).backward()
    optimizer.step(1, 1.0)
    model.load_state_dict(saved)
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # QAT on, then the train end: the raw (not fake-quantized) weights under the original names.
    plugin.alpha.fill_(1.0)
    raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
    plugin.pg_train_end(ctx)
    final = model.state_dict()
    assert sorted(final.keys()) == sorted(original_keys)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    for key, value in final.items():
        parametrized_key = key.removesuffix(".weight") + ".parametrizations.weight.original"
        assert torch.equal(value, raw[parametrized_key] if parametrized_key in raw else raw[key]), key
    assert not torch.equal(
        final["blocks.0.mlp.fc.weight"], numpy_fake_quant(final["blocks.0.mlp.fc.weight"], 6)
    )


def test_switches_on_after_the_first_step_below_the_threshold(tmp_path):
    model = spread_model()
    plugin, ctx = attach(model, run_dir=tmp_path)
    for step, scale in enumerate((1.0, 0.5, 0.2, 0.1, 0.05), 1):
        ctx.step, ctx.lr_scale = step, scale
        plugin.pg_step_end(ctx)
        assert float(plugin.alpha) == (1.0 if step >= 4 else 0.0), step
    ctx.log.close()
    log = (tmp_path / "train.log").read_text()
    assert log.count("late_qat:enabled") == 1
    assert "late_qat:enabled step:4 scale:0.1000 threshold:0.15 tensors:8\n" in log
    record: dict[str, Any] = {}
    plugin.pg_report(ctx, record)
    assert record == {"late_qat_step": 4, "late_qat_tensors": 8}


def test_disabled_attaches_nothing_and_reports_nothing():
    plain = spread_model()
    model = copy.deepcopy(plain)
    plugin, ctx = attach(model, LateQATConfig(enabled=False))
    ctx.step, ctx.lr_scale = 1, 0.0
    plugin.pg_step_end(ctx)
    plugin.pg_train_end(ctx)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    record: dict[str, Any] = {}
    plugin.pg_report(ctx, record)
    assert record == {}


def test_quantizer_without_qat_bits_is_refused_with_its_name():
    class NoQat:
        name = "noqat"

    cfg = types.SimpleNamespace(build=lambda: NoQat())
    with pytest.raises(ConfigError, match=r"NoQat has no qat_bits"):
        attach(spread_model(), quantizer_cfg=cfg)


@pytest.mark.parametrize("bits", [1, 17, 6.0, True])
def test_bad_bit_width_names_the_tensor(bits):
    cfg = types.SimpleNamespace(
        build=lambda: types.SimpleNamespace(
            qat_bits=lambda name, t: bits if name == "tok_emb.weight" else None
        )
    )
    with pytest.raises(ConfigError, match=re.escape("qat_bits('tok_emb.weight') returned")):
        attach(spread_model(), quantizer_cfg=cfg)


def test_bad_threshold_names_the_field():
    with pytest.raises(ConfigError, match=r"late_qat\.threshold"):
        LateQATConfig(threshold=-0.1)


# -- compiled: the switch is an input, not a constant ------------------------------------------
def _compiled_switch(backend_name: str) -> None:
    from torch._dynamo import lookup_backend

    torch._dynamo.reset()
    model = spread_model()
    plugin, _ = attach(model)
    compilations: list[int] = []

    def counting_backend(gm, example_inputs):
        compilations.append(1)
        return lookup_backend(backend_name)(gm, example_inputs)

    compiled = torch.compile(model, backend=counting_backend, fullgraph=True, dynamic=False)
    x, y = batch()
    with torch.no_grad():
        off = compiled(x)
        plugin.alpha.fill_(1.0)
        on = compiled(x)
        eager_on = model(x)
    assert len(compilations) == 1, "flipping alpha recompiled the model"
    assert (on - off).abs().max() > 1e-2, "the compiled graph ignored alpha (the switch was baked in)"
    torch.testing.assert_close(on, eager_on, rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


def test_compiled_model_follows_alpha_without_recompiling():
    _compiled_switch("aot_eager")


@pytest.mark.slow
def test_inductor_compiled_model_follows_alpha_without_recompiling():
    try:
        _compiled_switch("inductor")
    except torch._dynamo.exc.BackendCompilerFailed as exc:  # e.g. no C++ toolchain: say why
        pytest.skip(f"inductor cannot compile on this machine: {exc}")


# -- with the averagers, in any registration order -----------------------------------------------
@pytest.mark.parametrize("order", [("qat", "swa", "ema"), ("ema", "swa", "qat"), ("swa", "qat", "ema")])
def test_swa_and_ema_average_raw_weights_under_late_qat(order):
    model = spread_model()
    original_keys = list(model.state_dict().keys())
    optimizer = MuonConfig().build(model)
    plugins = {
        "qat": LateQATConfig(threshold=0.5).build(),
        "swa": SWAConfig(start_frac=0.5, every=1).build(),
        "ema": EMAConfig().build(),
    }
    manager = PluginManager()
    for name in order:
        manager.register_object(plugins[name], name=name)
    ctx = fake_ctx(model)
    manager.hook.pg_train_start(ctx=ctx)
    snapshots = []
    for step, scale in enumerate((1.0, 0.4, 0.3), 1):
        x, y = batch(step)
        loss_of(model, x, y).backward()
        optimizer.step(step, scale)
        optimizer.zero_grad()
        ctx.step, ctx.lr_scale = step, scale
        manager.hook.pg_step_end(ctx=ctx)
        if scale < 0.5:
            snapshots.append(
                {
                    k.replace(".parametrizations.weight.original", ".weight"): v.detach().clone()
                    for k, v in model.state_dict().items()
                }
            )
    manager.hook.pg_train_end(ctx=ctx)
    final = model.state_dict()
    assert sorted(final.keys()) == sorted(original_keys)
    for key, value in final.items():
        assert torch.equal(value, (snapshots[0][key] + snapshots[1][key]) / 2), key
    assert plugins["qat"].enabled_step == 2 and ctx.averaging == "swa"


# -- a real run ------------------------------------------------------------------------------------
def test_real_run_switches_qat_on_and_exports_original_names(tmp_path, default_dataset):
    import dataclasses

    from harness.pipeline.artifact import load_state_dict
    from harness.pipeline.plugin_manager import full_manager
    from harness.pipeline.runner import run
    from harness.pipeline.submission import build_submission_config
    from tests.conftest import write_tiny_submission

    sub = write_tiny_submission(tmp_path / "qat")
    # int8 with a 4,096-entry passthrough limit quantizes tok_emb, mlp.fc and mlp.proj of each block.
    config = dataclasses.replace(
        build_submission_config(sub),
        quantizer=Int8Config(passthrough_max_numel=4096),
        plugins=(LateQATConfig(threshold=0.9), SWAConfig(start_frac=0.9, every=2)),
    )
    # Step k runs at s = (9 - k)/6 from k = 3 (step-based warmdown), so s < 0.9 first at step 4;
    # warmup_steps=2 (the tiny default) primes and restores the parametrized model.
    sets = {
        "train.iterations": "8",
        "train.warmdown_iters": "6",
        "train.max_wallclock_seconds": "0",
        "train.val_loss_every": "0",
    }
    record = run(config, submission_dir=sub, run_id="qat", sets=sets)
    log = (sub / "runs" / "qat" / "train.log").read_text()
    assert "late_qat:armed tensors:5 bits:[8] threshold:0.9\n" in log
    assert "late_qat:enabled step:4 scale:0.8333 threshold:0.9 tensors:5\n" in log
    assert "swa:applying averaged 3 checkpoints\n" in log
    assert record["late_qat_step"] == 4 and record["late_qat_tensors"] == 5 and record["averaging"] == "swa"
    state, _ = load_state_dict(
        sub / "runs" / "qat" / record["artifact_file"], full_manager(entrypoints=False).registry
    )
    assert sorted(state) == sorted(TINY.build(1024).state_dict())  # the artifact stores names sorted
