"""Tests of the ``schedule`` plugins (plugins/schedule/): the wallclock default equals the
harness's upstream warmdown everywhere, step and cosine values against hand computations,
every value in [0, 1], no increase after warm-up, and a real tiny run logging a cosine."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from harness.api.errors import ConfigError
from harness.api.warmdown import lr_multiplier
from harness.pipeline.plugin_manager import full_manager
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from plugins.schedule.cosine import CosineConfig
from plugins.schedule.step_warmdown import StepWarmdownConfig
from plugins.schedule.wallclock_warmdown import WallclockWarmdownConfig
from tests.conftest import write_tiny_submission

CONFIGS = [
    WallclockWarmdownConfig(),
    WallclockWarmdownConfig(warmdown_iters=30, warmup_steps=7),
    WallclockWarmdownConfig(warmdown_iters=0),
    StepWarmdownConfig(warmdown_iters=30),
    StepWarmdownConfig(warmdown_iters=500, warmup_steps=10),
    CosineConfig(),
    CosineConfig(warmup_steps=5, min_scale=0.1),
    CosineConfig(min_scale=1.0, use_wallclock=False),
]
STEPS = (0, 1, 2, 5, 9, 10, 49, 50, 99, 100, 101, 150)
ELAPSED_MS = (0.0, 1.0, 250.0, 999.0, 4_000.0, 10_000.0, 12_500.0)
CAPS_MS = (-1.0, 0.0, 1.0, 5_000.0, 10_000.0)
ITERATIONS = (1, 20, 100)


def test_registered_under_their_module_names():
    registry = full_manager(entrypoints=False).registry
    assert registry.get("schedule", "wallclock_warmdown").config_cls is WallclockWarmdownConfig
    assert registry.get("schedule", "step_warmdown").config_cls is StepWarmdownConfig
    assert registry.get("schedule", "cosine").config_cls is CosineConfig


@pytest.mark.parametrize("warmdown_iters", [0, 1, 3, 30, 1200])
def test_wallclock_default_is_the_harness_default(warmdown_iters):
    schedule = WallclockWarmdownConfig(warmdown_iters=warmdown_iters).build()
    for step, elapsed, cap, iters in itertools.product(STEPS, ELAPSED_MS, CAPS_MS, ITERATIONS):
        kw = dict(iterations=iters, max_wallclock_ms=cap)
        expected = lr_multiplier(step, elapsed, warmdown_iters=warmdown_iters, **kw)
        assert schedule(step, elapsed, **kw) == expected, (step, elapsed, cap, iters)


@pytest.mark.parametrize("cfg", CONFIGS, ids=repr)
def test_values_in_unit_interval(cfg):
    schedule = cfg.build()
    for step, elapsed, cap, iters in itertools.product(STEPS, ELAPSED_MS, CAPS_MS, ITERATIONS):
        value = schedule(step, elapsed, iterations=iters, max_wallclock_ms=cap)
        assert isinstance(value, float) and 0.0 <= value <= 1.0, (step, elapsed, cap, iters, value)


@pytest.mark.parametrize("cfg", CONFIGS, ids=repr)
@pytest.mark.parametrize(("step_ms", "cap_ms"), [(10.0, 0.0), (10.0, 600.0), (10.0, 5_000.0), (3.0, 1_000.0)])
def test_non_increasing_after_warmup(cfg, step_ms, cap_ms):
    """A steady step time, as in a real run; the cap may or may not end the run first."""
    schedule, iters = cfg.build(), 120
    values = [schedule(s, s * step_ms, iterations=iters, max_wallclock_ms=cap_ms) for s in range(iters + 1)]
    warmup = getattr(cfg, "warmup_steps", 0)
    for s in range(max(warmup - 1, 0), iters):
        assert values[s + 1] <= values[s], (s, values[s], values[s + 1])


def test_linear_warmup_hand_values():
    schedule = WallclockWarmdownConfig(warmdown_iters=10, warmup_steps=4).build()
    kw = dict(iterations=100, max_wallclock_ms=0.0)
    # step = steps done, so the k-th step (step = k - 1) gets k / 4.
    assert [schedule(s, 0.0, **kw) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert schedule(95, 0.0, **kw) == pytest.approx(0.5)  # the warmdown still applies


def test_step_warmdown_hand_values_ignore_the_clock():
    schedule = StepWarmdownConfig(warmdown_iters=20).build()
    expected = {0: 1.0, 79: 1.0, 80: 1.0, 85: 0.75, 90: 0.5, 99: 0.05, 100: 0.0}
    for step, value in expected.items():
        for elapsed, cap in ((0.0, 0.0), (1e6, 5_000.0), (4_999.0, 5_000.0)):
            got = schedule(step, elapsed, iterations=100, max_wallclock_ms=cap)
            assert got == pytest.approx(value, abs=1e-12), (step, elapsed, cap)
    # Fewer iterations than the warmdown: the decay starts at step 0 from iterations/warmdown.
    assert schedule(0, 0.0, iterations=10, max_wallclock_ms=0.0) == pytest.approx(0.5)


def test_cosine_hand_values():
    wall = CosineConfig(min_scale=0.1).build()
    kw = dict(iterations=1000, max_wallclock_ms=1000.0)
    assert wall(3, 0.0, **kw) == pytest.approx(1.0)
    assert wall(3, 250.0, **kw) == pytest.approx(0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2)  # 0.86819805
    assert wall(3, 500.0, **kw) == pytest.approx(0.55)
    assert wall(999, 750.0, **kw) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(0.5)) / 2)  # clock, not step
    assert wall(3, 1000.0, **kw) == pytest.approx(0.1)
    assert wall(3, 2000.0, **kw) == pytest.approx(0.1)
    # No cap, or use_wallclock=False: progress is step / iterations.
    assert wall(500, 999.0, iterations=1000, max_wallclock_ms=0.0) == pytest.approx(0.55)
    steps = CosineConfig(use_wallclock=False).build()
    assert steps(250, 999.0, **kw) == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert steps(1000, 0.0, **kw) == pytest.approx(0.0, abs=1e-15)
    warm = CosineConfig(warmup_steps=10, use_wallclock=False).build()
    assert warm(0, 0.0, iterations=100, max_wallclock_ms=0.0) == pytest.approx(0.1)
    assert warm(20, 0.0, iterations=100, max_wallclock_ms=0.0) == pytest.approx(
        (1 + math.cos(0.2 * math.pi)) / 2
    )


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: CosineConfig(min_scale=1.5), "min_scale"),
        (lambda: CosineConfig(warmup_steps=-1), "warmup_steps"),
        (lambda: StepWarmdownConfig(warmdown_iters=2.5), "warmdown_iters"),
        (lambda: WallclockWarmdownConfig(warmup_steps=True), "warmup_steps"),
    ],
)
def test_bad_config_is_refused(make, field):
    with pytest.raises(ConfigError, match=field):
        make()


def test_tiny_run_logs_a_cosine(tmp_path, default_dataset):
    sub = write_tiny_submission(tmp_path / "cos")
    src = (sub / "train_gpt.py").read_text()
    src = src.replace(
        "from harness.pipeline.runner import run\n",
        "from harness.pipeline.runner import run\nfrom plugins.schedule.cosine import CosineConfig\n",
        1,
    )
    # Step progress: the tiny run's 600 s cap would keep a wallclock cosine at ~1 for 6 steps.
    src = src.replace("cpu_profile={},", "cpu_profile={}, schedule=CosineConfig(use_wallclock=False),", 1)
    assert "CosineConfig(use_wallclock=False)" in src
    (sub / "train_gpt.py").write_text(src)
    run(build_submission_config(sub), submission_dir=sub, run_id="c", sets={"train.warmup_steps": "0"})
    events = [json.loads(line) for line in (sub / "runs" / "c" / "metrics.jsonl").read_text().splitlines()]
    logged = {e["step"]: e["lr_scale"] for e in events if e.get("event") == "train"}
    # Step k runs after k - 1 steps: 0.5 * (1 + cos(pi * (k - 1) / 6)).
    assert logged == pytest.approx(
        {k: 0.5 * (1 + math.cos(math.pi * (k - 1) / 6)) for k in range(1, 7)}, abs=1e-12
    )
