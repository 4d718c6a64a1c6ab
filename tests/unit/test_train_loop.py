"""The training loop: wallclock stop with a fake clock, validation time excluded, warmdown,
priming undone, NaN abort that keeps the log."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from harness.api.config import RunConfig, TrainConfig
from harness.api.context import DistInfo, TrainContext
from harness.api.errors import TrainingDiverged
from harness.pipeline.runlog import RunLogger
from harness.pipeline.trainer import Trainer, lr_multiplier


@dataclass(frozen=True, kw_only=True)
class _Cfg:
    def build(self):  # pragma: no cover
        raise AssertionError


class _Clock:
    """Advances by ``tick`` seconds per call; ``jump`` adds time (a slow validation)."""

    def __init__(self, tick: float) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


class _Loader:
    def __init__(self, vocab: int, poison_from: int | None = None) -> None:
        self.vocab, self.calls, self.poison_from = vocab, 0, poison_from

    def next_batch(self, global_tokens, seq_len, accum):
        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        x = torch.randint(0, self.vocab, (2, seq_len), generator=g)
        return x, x.roll(-1, dims=1)

    def reset(self) -> None:
        self.calls = 0


class _Model(torch.nn.Module):
    def __init__(self, vocab: int = 16) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, vocab)
        self.poison = False

    def forward(self, x):
        out = self.emb(x)
        return out * float("nan") if self.poison else out


class _Opt:
    """Minimal OptimizerSet over SGD that records the lr scales it was given."""

    def __init__(self, model):
        self.sgd = torch.optim.SGD(model.parameters(), lr=0.1)
        self.scales: list[float] = []

    def zero_grad(self):
        self.sgd.zero_grad(set_to_none=True)

    def step(self, step, lr_scale):
        self.scales.append(lr_scale)
        self.sgd.step()

    def state_dict(self):
        return {"sgd": self.sgd.state_dict(), "n": len(self.scales)}

    def load_state_dict(self, s):
        self.sgd.load_state_dict(s["sgd"])
        del self.scales[s["n"] :]

    def describe(self):
        return []


class _Hooks:
    def __init__(self):
        self.steps: list[int] = []

    def pg_train_start(self, ctx):
        pass

    def pg_step_end(self, ctx):
        self.steps.append(ctx.step)


def _setup(tmp_path, clock, *, iterations=1000, cap=5.0, val_every=0, warmup=0, validate_cost=0.0):
    cfg = RunConfig(
        name="t",
        model=_Cfg(),
        optimizer=_Cfg(),
        quantizer=_Cfg(),
        compressor=_Cfg(),
        train=TrainConfig(
            iterations=iterations,
            max_wallclock_seconds=cap,
            val_loss_every=val_every,
            warmup_steps=warmup,
            train_batch_tokens=16,
            train_seq_len=8,
            grad_accum_steps=1,
            warmdown_iters=3,
        ),
    )
    model = _Model()
    log = RunLogger(tmp_path, 0, echo=False)
    ctx = TrainContext(
        config=cfg,
        model=model,
        optimizer=_Opt(model),
        log=log,
        dist=DistInfo(0, 1, 0, torch.device("cpu"), None),
        autocast_dtype=None,
    )
    vals = []

    def validate():
        clock.t += validate_cost  # a slow validation must not count as training time
        vals.append(ctx.step)
        return {"val_loss": 1.0, "val_bpb": 2.0}

    hooks = _Hooks()
    trainer = Trainer(ctx, train_model=model, loader=_Loader(16), validate=validate, hooks=hooks, clock=clock)
    return trainer, ctx, hooks, vals, log


def test_stops_on_first_step_past_the_cap(tmp_path):
    clock = _Clock(tick=0.5)  # each clock read advances 0.5 s
    trainer, ctx, hooks, vals, log = _setup(tmp_path, clock, cap=5.0)
    result = trainer.run()
    log.close()
    assert result.stopped_early
    assert result.train_time_ms >= 5000.0
    # one step earlier the cap had not been reached
    assert hooks.steps == list(range(1, result.steps + 1))
    text = (tmp_path / "train.log").read_text()
    assert (
        f"stopping_early: wallclock_cap train_time:{result.train_time_ms:.0f}ms step:{result.steps}/1000"
        in text
    )
    assert f"step:{result.steps}/1000 val_loss:1.0000 val_bpb:2.0000" in text  # final validation
    assert vals == [result.steps]


def _charge_per_step(trainer, clock, seconds):
    """Make every training step cost ``seconds`` on the fake clock (reads themselves are free)."""
    original = trainer._train_step

    def step(step_no, scale):
        clock.t += seconds
        return original(step_no, scale)

    trainer._train_step = step


def test_validation_time_is_excluded(tmp_path):
    slow = _Clock(tick=0.0)
    trainer, _, _, vals, log = _setup(tmp_path, slow, cap=5.0, val_every=2, validate_cost=100.0)
    _charge_per_step(trainer, slow, 0.5)
    result = trainer.run()
    log.close()
    (tmp_path / "b").mkdir()
    fast = _Clock(tick=0.0)
    trainer2, _, _, _, log2 = _setup(tmp_path / "b", fast, cap=5.0)
    _charge_per_step(trainer2, fast, 0.5)
    result2 = trainer2.run()
    log2.close()
    assert len(vals) > 2  # validated at step 0, 2, 4, ... and at the end
    # 100 s validations did not eat the 5 s training budget: the same stop step, 5.0 s of training
    assert result.steps == result2.steps == 10
    assert result.train_time_ms == result2.train_time_ms == 5000.0


def test_iterations_limit_without_early_stop(tmp_path):
    trainer, _, hooks, _, log = _setup(tmp_path, _Clock(0.001), iterations=7, cap=600.0)
    result = trainer.run()
    log.close()
    assert result.steps == 7 and not result.stopped_early
    assert "stopping_early" not in (tmp_path / "train.log").read_text()


def test_warmdown_reaches_zero_at_cap_and_is_one_before():
    kw = dict(iterations=20000, warmdown_iters=100, max_wallclock_ms=600_000.0)
    assert lr_multiplier(10, 1_000.0, **kw) == 1.0  # 100 ms/step -> warmdown is the last 10 s
    assert lr_multiplier(5950, 595_000.0, **kw) == pytest.approx(5_000 / (100 * 595_000 / 5950))
    assert lr_multiplier(6000, 600_000.0, **kw) == 0.0
    # no cap: step-based over the last warmdown_iters
    assert lr_multiplier(
        19_950, 0.0, iterations=20000, warmdown_iters=100, max_wallclock_ms=0
    ) == pytest.approx(0.5)
    assert lr_multiplier(100, 0.0, iterations=20000, warmdown_iters=100, max_wallclock_ms=0) == 1.0


def test_priming_is_undone(tmp_path):
    trainer, ctx, _, _, log = _setup(tmp_path, _Clock(0.001), iterations=3, cap=600.0, warmup=4)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    trainer.prime()
    after = ctx.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.loader.calls == 0 and ctx.optimizer.scales == []
    log.close()
    assert "warmup_step:4/4" in (tmp_path / "train.log").read_text()


def test_nan_loss_aborts_with_step_and_keeps_log(tmp_path):
    trainer, ctx, hooks, _, log = _setup(tmp_path, _Clock(0.001), iterations=50, cap=600.0)
    original = trainer._train_step

    def step(step_no, scale):
        ctx.model.poison = step_no >= 4
        return original(step_no, scale)

    trainer._train_step = step
    with pytest.raises(TrainingDiverged, match="at step 4"):
        trainer.run()
    log.close()
    text = (tmp_path / "train.log").read_text()
    assert "step:3/50 train_loss:" in text and "aborting: non-finite loss" in text
    assert '"event": "diverged"' in (tmp_path / "metrics.jsonl").read_text()
