"""Depth recurrence as PR #1493 runs it (plugins/arch/recycled_core.py, mode "loop", and the
GPT host's routes): the virtual order and U-Net split its logs print, a hand-unrolled
forward, and the late switch at 35% of training, in the model and through the Trainer.

References: the record's log lines ``loop_warmup:enabled encoder:[0, 1, 2, 3, 4, 5, 3, 4]
decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]`` and ``layer_loop:enabled step:2018 frac:0.350``
(train_seed42.log), and its rule frac = elapsed / cap (step / iterations without a cap),
checked before each step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.api.config import RunConfig, TrainConfig
from harness.api.context import DistInfo, TrainContext
from harness.api.errors import ConfigError
from harness.api.protocols import TrainingProgress
from harness.pipeline.runlog import RunLogger
from harness.pipeline.trainer import Trainer
from plugins.arch.gpt import GPTConfig
from plugins.arch.recycled_core import RecycledCoreConfig
from plugins.arch.skip_gates import SkipGatesConfig

VOCAB = 32


def loop(**kw) -> RecycledCoreConfig:
    fields = dict(layers=(3, 4, 5), repeats=2, mode="loop", modulation=False, start_frac=0.35)
    return RecycledCoreConfig(**{**fields, **kw})


def tiny(*components, num_layers: int = 11, seed: int = 0):
    torch.manual_seed(seed)
    cfg = GPTConfig(num_layers=num_layers, model_dim=32, num_heads=2, num_kv_heads=1, components=components)
    model = cfg.build(VOCAB)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # zero-initialised projections would hide every block
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed))


def test_virtual_order_and_split_are_the_records():
    with torch.device("meta"):
        model = GPTConfig(num_layers=11, components=(loop(),)).build(VOCAB)
    assert [layer for layer, _, _ in model._route_on] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert model.effective_depth == 17 and model.recycled_layers == (3, 4, 5, 3, 4, 5)
    line = "encoder:[0, 1, 2, 3, 4, 5, 3, 4] decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]"
    assert any(line in d for d in model.describe())
    # The record sizes its skip weights by the loop's split: min(8, 9) = 8 (11 layers: 5 otherwise).
    assert model.skip_weights.shape == (8, 512)
    assert not [n for n, _ in model.named_parameters() if n.startswith("recycle.")]


def unrolled(model, x, order, half):
    """The record's forward_logits written out: U-Net over ``order`` cut at ``half``."""
    h = F.rms_norm(model.tok_emb(x), (32,))
    x0, (cos, sin), skips = h, model.rotary(x.size(1), x.device), []
    for pos, layer in enumerate(order):
        if pos >= half and skips:
            h = h + model.skip_weights[pos - half] * skips.pop()
        h = model.blocks[layer](h, x0, cos, sin)
        if pos < half:
            skips.append(h)
    return F.rms_norm(h, (32,))


def test_forward_on_and_off_match_hand_unrolled_routes():
    model = tiny(loop())
    x = ids()
    on = [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert torch.allclose(model.hidden(x), unrolled(model, x, on, 8), atol=1e-5)
    model.recycle.active = False
    assert torch.allclose(model.hidden(x), unrolled(model, x, list(range(11)), 5), atol=1e-5)


def test_switch_by_steps_at_35_percent_changes_the_forward():
    model = tiny(loop(clock="steps"))
    assert isinstance(model, TrainingProgress)
    x = ids()
    assert model.recycle.active  # a fresh build is the trained (evaluated) state
    looped = model(x).detach()
    assert model.on_train_progress(0, 0.0, iterations=40, max_wallclock_ms=360_000.0) == [
        "layer_loop:disabled step:0 frac:0.000"
    ]
    plain = model(x).detach()
    assert not torch.allclose(plain, looped, atol=1e-4)
    # 13/40 = 0.325 < 0.35: still plain; 14/40 = 0.35: on before the 15th step (the cap is ignored).
    assert model.on_train_progress(13, 1e9, iterations=40, max_wallclock_ms=360_000.0) == []
    assert torch.equal(model(x), plain)
    lines = model.on_train_progress(14, 0.0, iterations=40, max_wallclock_ms=360_000.0)
    assert lines and lines[0].startswith(
        "layer_loop:enabled step:14 frac:0.350 encoder:[0, 1, 2, 3, 4, 5, 3, 4]"
    )
    assert torch.equal(model(x), looped)


def test_auto_clock_is_the_wallclock_fraction_under_a_cap():
    model = tiny(loop())
    cap = 588_000.0  # the record's effective cap: 600 s less the 12 s GPTQ reserve
    model.on_train_progress(0, 0.0, iterations=20_000, max_wallclock_ms=cap)
    assert not model.recycle.active
    # Step 2018 of seed 42 at 0.350 of 588 s: the step count does not matter, the clock does.
    model.on_train_progress(19_999, 0.3499 * cap, iterations=20_000, max_wallclock_ms=cap)
    assert not model.recycle.active
    model.on_train_progress(2018, 0.35 * cap, iterations=20_000, max_wallclock_ms=cap)
    assert model.recycle.active
    # Without a cap the record falls back to step / iterations.
    model.on_train_progress(6999, 0.0, iterations=20_000, max_wallclock_ms=0.0)
    assert not model.recycle.active
    model.on_train_progress(7000, 0.0, iterations=20_000, max_wallclock_ms=0.0)
    assert model.recycle.active


def test_p1573_core_mode_never_switches():
    model = tiny(RecycledCoreConfig(layers=(1, 2)), num_layers=6)
    assert model.on_train_progress(0, 0.0, iterations=40, max_wallclock_ms=0.0) == []
    assert model.recycle.active and len(model.recycle) == 2


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"mode": "spiral"}, "mode"),
        ({"layers": (3, 5)}, "layers"),
        ({"clock": "wall"}, "clock"),
        ({"start_frac": 1.0}, "start_frac"),
        ({"start_frac": float("nan")}, "start_frac"),
        ({"modulation": 1}, "modulation"),
    ],
)
def test_bad_options_are_refused(kw, field):
    with pytest.raises(ConfigError, match=f"recycled_core.{field}"):
        GPTConfig(num_layers=11, components=(loop(**kw),))


# ---------------------------------------------------------------- through the Trainer


class _Loader:
    def next_batch(self, global_tokens, seq_len, accum):
        x = torch.randint(0, VOCAB, (2, seq_len), generator=torch.Generator().manual_seed(7))
        return x, x.roll(-1, dims=1)

    def reset(self) -> None:
        pass


class _Opt:
    """SGD that records, at every step, whether the recycled passes were on."""

    def __init__(self, model):
        self.model, self.sgd, self.active = model, torch.optim.SGD(model.parameters(), lr=1e-3), []

    def zero_grad(self):
        self.sgd.zero_grad(set_to_none=True)

    def step(self, step, lr_scale):
        self.active.append(self.model.recycle.active)
        self.sgd.step()

    def state_dict(self):
        return {"sgd": self.sgd.state_dict(), "n": len(self.active)}

    def load_state_dict(self, s):
        self.sgd.load_state_dict(s["sgd"])
        del self.active[s["n"] :]

    def describe(self):
        return []


class _Hooks:
    def pg_step_end(self, ctx):
        pass


class _Cfg:
    def build(self):  # pragma: no cover
        raise AssertionError


def test_trainer_switches_before_step_15_of_40_and_primes_both_states(tmp_path):
    model = tiny(loop(clock="steps"), num_layers=11)
    cfg = RunConfig(
        name="t",
        model=_Cfg(),
        optimizer=_Cfg(),
        quantizer=_Cfg(),
        compressor=_Cfg(),
        train=TrainConfig(
            iterations=40,
            max_wallclock_seconds=360.0,
            val_loss_every=0,
            warmup_steps=2,
            train_batch_tokens=24,
            train_seq_len=12,
            grad_accum_steps=1,
        ),
    )
    opt = _Opt(model)
    log = RunLogger(tmp_path, 0, echo=False)
    ctx = TrainContext(
        config=cfg,
        model=model,
        optimizer=opt,
        log=log,
        dist=DistInfo(0, 1, 0, torch.device("cpu"), None),
        autocast_dtype=None,
    )
    trainer = Trainer(
        ctx,
        train_model=model,
        loader=_Loader(),
        validate=lambda: {"val_loss": 1.0, "val_bpb": 1.0},
        hooks=_Hooks(),
    )
    trainer.prime()
    # Priming ran 2 steps plain and 2 looped (then undid them), and left the model plain.
    assert opt.active == [] and not model.recycle.active
    primed = (tmp_path / "train.log").read_text()
    assert "warmup_step:2/2" in primed and "late_warmup_step:2/2" in primed
    trainer.run()
    # Steps 1..14 plain, 15..40 looped: frac = 14/40 = 0.35 is reached before the 15th step.
    assert opt.active == [False] * 14 + [True] * 26
    text = (tmp_path / "train.log").read_text()
    assert "layer_loop:enabled step:14 frac:0.350" in text


def test_compiled_model_follows_the_switch():
    # The record flips a Python flag under torch.compile(fullgraph=True) and relies on the guard
    # to re-trace; the route flag here must behave the same (dynamo only: backend "eager").
    model = tiny(loop(clock="steps"), SkipGatesConfig())
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = ids()
    model.on_train_progress(0, 0.0, iterations=40, max_wallclock_ms=0.0)
    plain = compiled(x)
    assert torch.allclose(plain, model(x), atol=1e-5)
    model.on_train_progress(14, 0.0, iterations=40, max_wallclock_ms=0.0)
    looped = compiled(x)
    assert torch.allclose(looped, model(x), atol=1e-5)
    assert not torch.allclose(plain, looped, atol=1e-4)
