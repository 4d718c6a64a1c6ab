"""Config resolution: type-checked overrides, unknown keys, the CPU profile, env precedence."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness.api.config import (
    RunConfig,
    TrainConfig,
    apply_overrides,
    component_modules,
    cpu_smoke_profile,
    env_overrides,
    parse_set_args,
    resolve,
    valid_keys,
)
from harness.api.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class _ToyConfig:
    width: int = 8
    """width"""
    act: str = "relu"
    """activation"""

    def build(self):  # pragma: no cover - never built here
        raise AssertionError


def _cfg(**kw) -> RunConfig:
    return RunConfig(
        name="t",
        model=_ToyConfig(),
        optimizer=_ToyConfig(),
        quantizer=_ToyConfig(),
        compressor=_ToyConfig(),
        **kw,
    )


def test_overrides_are_type_checked_and_coerced():
    cfg = apply_overrides(
        _cfg(),
        {
            "train.iterations": "50",
            "train.compile": "false",
            "train.max_wallclock_seconds": "1.5",
            "model.width": 16,
        },
    )
    assert cfg.train.iterations == 50 and isinstance(cfg.train.iterations, int)
    assert cfg.train.compile is False
    assert cfg.train.max_wallclock_seconds == 1.5
    assert cfg.model.width == 16
    assert cfg.optimizer.width == 8  # other components untouched


def test_optional_fields_accept_none_and_values():
    cfg = apply_overrides(_cfg(), {"data.data_path": "/x"})
    assert cfg.data.data_path == "/x"
    assert apply_overrides(cfg, {"data.data_path": "none"}).data.data_path is None


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("train.iterations", "abc", "train.iterations: expected int"),
        ("train.compile", "maybe", "expected a boolean"),
        ("train.iterations", "2.5", "expected int"),
    ],
)
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(_cfg(), {key: value})


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as exc:
        apply_overrides(_cfg(), {"train.iteratons": "5"})
    msg = str(exc.value)
    assert "train.iteratons" in msg and "train.iterations" in msg and "model.width" in msg


def test_valid_keys_cover_sections_and_components():
    keys = valid_keys(_cfg())
    assert "eval.eval_stride" in keys and "data.vocab_size" in keys and "model.act" in keys
    assert "plugins" not in keys and "cpu_profile" not in keys


def test_env_overrides_use_upstream_names():
    env = {"MAX_WALLCLOCK_SECONDS": "30", "SEED": "7", "UNRELATED": "1", "VAL_LOSS_EVERY": ""}
    assert env_overrides(env) == {"train.max_wallclock_seconds": "30", "train.seed": "7"}


def test_resolution_order_cpu_profile_then_env_then_set():
    base = _cfg(
        train=TrainConfig(max_wallclock_seconds=600.0),
        cpu_profile={"train.max_wallclock_seconds": 100.0, "train.seed": 3},
    )
    on_gpu = resolve(base, cuda=True, environ={}, sets={})
    assert on_gpu.train.max_wallclock_seconds == 600.0  # the CPU profile is for CPU only
    on_cpu = resolve(base, cuda=False, environ={}, sets={})
    assert on_cpu.train.max_wallclock_seconds == 100.0 and on_cpu.train.seed == 3
    env = resolve(base, cuda=False, environ={"MAX_WALLCLOCK_SECONDS": "20"}, sets={})
    assert env.train.max_wallclock_seconds == 20.0
    both = resolve(
        base, cuda=False, environ={"MAX_WALLCLOCK_SECONDS": "20"}, sets={"train.max_wallclock_seconds": "5"}
    )
    assert both.train.max_wallclock_seconds == 5.0


def test_resolve_rejects_non_components():
    with pytest.raises(ConfigError, match="RunConfig.model"):
        resolve(
            RunConfig(
                name="t", model=3, optimizer=_ToyConfig(), quantizer=_ToyConfig(), compressor=_ToyConfig()
            ),
            cuda=True,
            environ={},
            sets={},
        )
    with pytest.raises(ConfigError, match="must return a RunConfig"):
        resolve({"name": "x"}, cuda=True, environ={}, sets={})  # type: ignore[arg-type]


def test_parse_set_args():
    assert parse_set_args(["a.b=1", "c.d = x=y"]) == {"a.b": "1", "c.d": "x=y"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set_args(["oops"])


def test_component_modules_are_the_config_modules():
    assert component_modules(_cfg()) == [__name__]


def test_run_plugins_are_overridden_by_module_name():
    from plugins.averaging.ema import EMAConfig
    from plugins.averaging.swa import SWAConfig

    cfg = _cfg(plugins=(SWAConfig(every=50), EMAConfig(decay=0.997)))
    assert {"plugins.ema.apply", "plugins.ema.decay", "plugins.swa.every"} <= set(valid_keys(cfg))
    out = apply_overrides(cfg, {"plugins.ema.apply": "false", "plugins.swa.every": "5"})
    assert out.plugins == (SWAConfig(every=5), EMAConfig(decay=0.997, apply=False))
    with pytest.raises(ConfigError, match="plugins.ema.bogus"):
        apply_overrides(cfg, {"plugins.ema.bogus": "1"})
    with pytest.raises(ConfigError, match="ema"):  # the plugin's own validation still runs
        apply_overrides(cfg, {"plugins.ema.decay": "1.5"})


def test_a_profile_may_replace_the_schedule_with_a_config_only():
    from plugins.schedule.step_warmdown import StepWarmdownConfig

    cfg = _cfg()
    sched = StepWarmdownConfig(warmup_steps=5, warmdown_iters=15)
    assert apply_overrides(cfg, {"schedule": sched}, "cpu profile").schedule == sched
    with pytest.raises(ConfigError, match="expected a schedule Config"):
        apply_overrides(cfg, {"schedule": "cosine"})
    profile = cpu_smoke_profile(steps=40, cap_s=360.0)
    assert profile["train.iterations"] == 40 and profile["train.max_wallclock_seconds"] == 360.0
    assert "train.iterations" not in cpu_smoke_profile()  # without a step budget: the cap decides
