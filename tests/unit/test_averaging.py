"""SWA and EMA observer plugins (plugins/averaging): T1's snapshot rule, float32 sums that
beat bf16 summation, the EMA recursion against hand-computed values, SWA > EMA whatever the
registration order, disabled averagers as exact no-ops (over the registry), and a real tiny
run whose exported weights are the mean of the snapshots."""

from __future__ import annotations

import dataclasses
import re
import types
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.pipeline.plugin_manager import PluginManager, full_manager
from harness.pipeline.runlog import RunLogger
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from plugins.arch.gpt import GPTConfig
from plugins.arch.upstream_numerics import to_baseline_dtypes
from plugins.averaging.ema import EMAConfig
from plugins.averaging.swa import SWAConfig
from plugins.optim.muon import MuonConfig
from tests.conftest import write_tiny_submission

VOCAB = 64
TINY = GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
AVERAGERS = full_manager(entrypoints=False).registry.names("averaging")


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return TINY.build(VOCAB)


def fake_ctx(model: torch.nn.Module, run_dir=None) -> types.SimpleNamespace:
    """What the hooks read from harness.pipeline.trainer.TrainContext."""
    return types.SimpleNamespace(
        model=model,
        config=None,
        log=RunLogger(run_dir, echo=False),
        step=0,
        lr_scale=1.0,
        averaging=None,
        notes={},
    )


def manager_with(*plugins: Any) -> PluginManager:
    manager = PluginManager()
    for i, plugin in enumerate(plugins):
        manager.register_object(plugin, name=f"plugin{i}")
    return manager


def fill_all(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def drive(manager: PluginManager, ctx, model, values_by_step: dict[int, float], scale_of) -> None:
    """Set every weight to ``values_by_step[step]`` as if the optimizer had, then end the step."""
    manager.hook.pg_train_start(ctx=ctx)
    for step, value in values_by_step.items():
        fill_all(model, value)
        ctx.step, ctx.lr_scale = step, scale_of(step)
        manager.hook.pg_step_end(ctx=ctx)
    manager.hook.pg_train_end(ctx=ctx)


# -- SWA ---------------------------------------------------------------------------------
def test_swa_snapshots_follow_the_t1_rule(tmp_path):
    model = tiny_model()
    ctx = fake_ctx(model, tmp_path)
    swa = SWAConfig(start_frac=0.5, every=2).build()
    # s = 1 - step/10: below 0.5 from step 6 on; even steps 6, 8, 10 -> mean (6+8+10)/3 = 8.
    drive(manager_with(swa), ctx, model, {s: float(s) for s in range(1, 11)}, lambda s: 1 - s / 10)
    ctx.log.close()
    for name, p in model.named_parameters():
        assert torch.all(p == 8.0), name
    log = (tmp_path / "train.log").read_text()
    assert "swa:start step:6\n" in log
    assert "swa:applying averaged 3 checkpoints\n" in log
    assert ctx.averaging == "swa" and ctx.notes == {"swa_snapshots": 3}
    record: dict[str, Any] = {}
    manager_with(swa).hook.pg_report(ctx=ctx, record=record)
    assert record == {"averaging": "swa", "swa_snapshots": 3}


def test_swa_sums_in_float32_and_restores_each_dtype():
    model = to_baseline_dtypes(tiny_model())  # tok_emb bf16, the rest fp32, as upstream
    assert model.tok_emb.weight.dtype == torch.bfloat16
    ctx = fake_ctx(model)
    # In bf16, 256 + 1 rounds back to 256, so a bf16 sum of 256,1,1,1,1 gives 256/5 -> 51.25;
    # the float32 sum is 260, mean 52 (exact in bf16).
    values = {1: 256.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}
    drive(manager_with(SWAConfig(start_frac=1.5, every=1).build()), ctx, model, values, lambda s: 1.0)
    assert model.tok_emb.weight.dtype == torch.bfloat16
    assert torch.all(model.tok_emb.weight == 52.0)
    assert all(
        p.dtype == torch.float32 and torch.all(p == 52.0)
        for n, p in model.named_parameters()
        if n != "tok_emb.weight"
    )


@pytest.mark.parametrize(("min_snapshots", "applied"), [(2, False), (1, True)])
def test_swa_min_snapshots(min_snapshots, applied):
    model = tiny_model()
    ctx = fake_ctx(model)
    # One snapshot (step 2 of 3), then the weights move on to 3.
    drive(
        manager_with(SWAConfig(start_frac=0.5, every=2, min_snapshots=min_snapshots).build()),
        ctx,
        model,
        {1: 1.0, 2: 2.0, 3: 3.0},
        lambda s: 0.1,
    )
    expected = 2.0 if applied else 3.0
    assert all(torch.all(p == expected) for p in model.parameters())
    assert (ctx.averaging is not None) is applied


def test_swa_keeps_its_sums_on_the_device_without_host_syncs(monkeypatch):
    model = tiny_model()
    ctx = fake_ctx(model)
    swa = SWAConfig(start_frac=0.5, every=1).build()
    manager = manager_with(swa)

    def no_item(self):  # any .item() in the hook would be a host-device sync on CUDA
        raise AssertionError("pg_step_end called .item()")

    monkeypatch.setattr(torch.Tensor, "item", no_item)
    for step in (1, 2, 3):
        ctx.step, ctx.lr_scale = step, 0.1
        manager.hook.pg_step_end(ctx=ctx)
    monkeypatch.undo()
    assert swa.count == 3
    assert all(
        s.device == p.device and s.dtype == torch.float32
        for s, p in zip(swa.sums, model.parameters(), strict=True)
    )


# -- EMA ---------------------------------------------------------------------------------
def test_ema_matches_the_hand_computed_recursion(tmp_path):
    model = tiny_model()
    fill_all(model, 0.0)
    ctx = fake_ctx(model, tmp_path)
    # e0 = 0; e1 = 0.1*1 = 0.1; e2 = 0.9*0.1 + 0.1*2 = 0.29; e3 = 0.9*0.29 + 0.1*3 = 0.561.
    drive(manager_with(EMAConfig(decay=0.9).build()), ctx, model, {1: 1.0, 2: 2.0, 3: 3.0}, lambda s: 1.0)
    ctx.log.close()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.561), rtol=0, atol=1e-6, msg=name)
    assert "ema:applying EMA weights decay:0.9\n" in (tmp_path / "train.log").read_text()
    assert ctx.averaging == "ema"


def test_ema_shadow_starts_from_the_weights_at_train_start():
    model = tiny_model()
    fill_all(model, 4.0)
    ctx = fake_ctx(model)
    # One update with w = 0: e = 0.75 * 4 = 3.
    drive(manager_with(EMAConfig(decay=0.75).build()), ctx, model, {1: 0.0}, lambda s: 1.0)
    assert all(torch.all(p == 3.0) for p in model.parameters())


@pytest.mark.parametrize("ema_first", [True, False])
def test_swa_takes_priority_over_ema_in_either_registration_order(tmp_path, ema_first):
    model = tiny_model()
    ctx = fake_ctx(model, tmp_path)
    swa, ema = SWAConfig(start_frac=0.5, every=1).build(), EMAConfig(decay=0.5).build()
    manager = manager_with(ema, swa) if ema_first else manager_with(swa, ema)
    drive(manager, ctx, model, {1: 1.0, 2: 2.0, 3: 4.0}, lambda s: 1.0 if s == 1 else 0.1)
    ctx.log.close()
    assert all(torch.all(p == 3.0) for p in model.parameters())  # SWA mean of steps 2, 3
    log = (tmp_path / "train.log").read_text()
    assert "ema:not applied (swa took priority)" in log and "ema:applying" not in log
    record: dict[str, Any] = {}
    manager.hook.pg_report(ctx=ctx, record=record)
    assert record["averaging"] == "swa" and record["ema_applied"] is False and record["swa_snapshots"] == 2


def test_ema_applies_when_swa_has_too_few_snapshots():
    model = tiny_model()
    fill_all(model, 0.0)
    ctx = fake_ctx(model)
    manager = manager_with(SWAConfig(start_frac=0.5, every=1).build(), EMAConfig(decay=0.5).build())
    # SWA takes one snapshot (step 3) < min_snapshots=2; EMA: 0 -> 0.5 -> 1.25 -> 2.625.
    drive(manager, ctx, model, {1: 1.0, 2: 2.0, 3: 4.0}, lambda s: 0.1 if s == 3 else 1.0)
    assert all(torch.all(p == 2.625) for p in model.parameters())
    assert ctx.averaging == "ema"


# -- disabled averagers are exact no-ops -------------------------------------------------
SCALES = (1.0, 0.6, 0.3, 0.1)


def train(plugins: tuple[Any, ...]) -> dict[str, torch.Tensor]:
    """Four Muon steps of the tiny GPT with ``plugins`` hooked in; returns the final weights."""
    model = tiny_model(seed=3)
    optimizer = MuonConfig().build(model)
    manager = manager_with(*plugins)
    ctx = fake_ctx(model)
    manager.hook.pg_train_start(ctx=ctx)
    gen = torch.Generator().manual_seed(5)
    for step, scale in enumerate(SCALES, 1):
        x = torch.randint(0, VOCAB, (2, 16), generator=gen)
        F.cross_entropy(model(x).reshape(-1, VOCAB), x.roll(-1, 1).reshape(-1)).backward()
        optimizer.step(step, scale)
        optimizer.zero_grad()
        ctx.step, ctx.lr_scale = step, scale
        manager.hook.pg_step_end(ctx=ctx)
    manager.hook.pg_train_end(ctx=ctx)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def plain_weights() -> dict[str, torch.Tensor]:
    return train(())


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", AVERAGERS)
def test_disabled_averager_is_an_exact_no_op(name, plain_weights):
    cls = full_manager(entrypoints=False).registry.get("averaging", name).config_cls
    assert_bit_identical(train((cls(enabled=False).build(),)), plain_weights)


@pytest.mark.parametrize(
    "cfg",
    [SWAConfig(start_frac=0.05), SWAConfig(start_frac=0.5, every=1, min_snapshots=3), EMAConfig(apply=False)],
    ids=["swa_never_starts", "swa_too_few_snapshots", "ema_not_applied"],
)
def test_averagers_that_do_not_apply_are_exact_no_ops(cfg, plain_weights):
    assert_bit_identical(train((cfg.build(),)), plain_weights)


@pytest.mark.parametrize(
    "cfg", [SWAConfig(start_frac=0.5, every=1), EMAConfig(decay=0.5)], ids=["swa", "ema"]
)
def test_enabled_averagers_do_change_the_weights(cfg, plain_weights):
    """The control for the no-op tests: the same loop with an active averager differs."""
    weights = train((cfg.build(),))
    assert any(not torch.equal(weights[k], plain_weights[k]) for k in weights)


@pytest.mark.parametrize(
    ("cls", "kwargs", "field_name"),
    [
        (SWAConfig, {"start_frac": 0.0}, "swa.start_frac"),
        (SWAConfig, {"every": 0}, "swa.every"),
        (SWAConfig, {"min_snapshots": 0}, "swa.min_snapshots"),
        (EMAConfig, {"decay": 1.0}, "ema.decay"),
        (EMAConfig, {"apply": "yes"}, "ema.apply"),
    ],
)
def test_bad_settings_name_the_field(cls, kwargs, field_name):
    with pytest.raises(ConfigError, match=re.escape(field_name)):
        cls(**kwargs)


# -- a real run ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RecorderConfig:
    """Test observer: keeps every post-step state dict and the exported float state dict."""

    sink: list = field(default_factory=list, compare=False, repr=False)
    """Where the recordings go (the test reads them after the run)."""

    def build(self) -> Recorder:
        return Recorder(self.sink)


class Recorder:
    def __init__(self, sink: list) -> None:
        self.sink = sink

    @hookimpl
    def pg_step_end(self, ctx):
        state = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        self.sink.append(("step", ctx.step, ctx.lr_scale, state))

    @hookimpl
    def pg_before_quantize(self, ctx, state_dict):
        self.sink.append(("export", {k: v.clone() for k, v in state_dict.items()}))


def test_real_run_exports_the_mean_of_the_snapshots(tmp_path, default_dataset):
    sub = write_tiny_submission(tmp_path / "swa")
    recorder = RecorderConfig()
    config = dataclasses.replace(
        build_submission_config(sub), plugins=(SWAConfig(start_frac=0.9, every=2), EMAConfig(), recorder)
    )
    # Step-based warmdown over the last 6 of 8 steps: step k runs at s = (9 - k)/6 from k = 3,
    # so s < 0.9 from step 4 on and the snapshots are steps 4, 6 and 8.
    sets = {
        "train.iterations": "8",
        "train.warmdown_iters": "6",
        "train.max_wallclock_seconds": "0",
        "train.val_loss_every": "0",
    }
    record = run(config, submission_dir=sub, run_id="swa", sets=sets)
    steps = [entry for entry in recorder.sink if entry[0] == "step"]
    snapshots = [state for _, step, scale, state in steps if scale < 0.9 and step % 2 == 0]
    assert [step for _, step, scale, _ in steps if scale < 0.9 and step % 2 == 0] == [4, 6, 8]
    exported = [entry[1] for entry in recorder.sink if entry[0] == "export"]
    assert len(exported) == 1
    last = steps[-1][3]
    for key, value in exported[0].items():
        mean = sum(s[key] for s in snapshots) / len(snapshots)
        assert torch.equal(value, mean.to(value.dtype)), key
    assert any(not torch.equal(exported[0][k], last[k]) for k in last)  # not just the final weights
    log = (sub / "runs" / "swa" / "train.log").read_text()
    assert "swa:start step:4\n" in log
    assert "swa:applying averaged 3 checkpoints\n" in log
    assert "ema:not applied (swa took priority)\n" in log
    assert log.index("swa:applying") < log.index("final_prequant")
    assert record["averaging"] == "swa" and record["swa_snapshots"] == 3 and record["ema_applied"] is False
