"""submissions/sp8192_recur_ttt against facts of the PR #1493 record
(records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT): its
parameter count, its layer split, its cap and warmdown, and the smoke profile's labels."""

from __future__ import annotations

import math

import pytest
import torch

from harness.api.config import apply_overrides
from harness.pipeline.submission import build_submission_config
from plugins.arch.gpt import GPTConfig
from plugins.arch.parallel_residual import ParallelResidualConfig
from plugins.schedule.step_warmdown import StepWarmdownConfig
from plugins.schedule.wallclock_warmdown import WallclockWarmdownConfig
from tests.conftest import ROOT

# train_seed42.log, train_seed314.log and train_seed999.log of the record all print
# "model_params:35944536" (vocabulary 8192).
RECORD_MODEL_PARAMS = 35_944_536


@pytest.fixture(scope="module")
def config():
    return build_submission_config(ROOT / "submissions" / "sp8192_recur_ttt")


def test_full_model_has_the_records_parameter_count(config):
    assert config.data.vocab_size == 8192
    with torch.device("meta"):
        model = config.model.build(config.data.vocab_size)
    assert sum(p.numel() for p in model.parameters()) == RECORD_MODEL_PARAMS
    lines = model.describe()
    # The record's "layer_loop:enabled ... encoder:[...] decoder:[...]" split, and XSA on all 11 layers.
    assert any(
        "encoder:[0, 1, 2, 3, 4, 5, 3, 4] decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]" in line for line in lines
    )
    assert "XSA:last_11 active_layers:[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" in lines
    assert "parallel_residual:last_4 layers:[7, 8, 9, 10]" in lines


def test_query_gain_and_caps_are_the_records(config):
    assert config.model.qk_gain_init == 5.25
    model = GPTConfig(num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, qk_gain_init=5.25).build(64)
    assert torch.equal(model.blocks[1].attn.q_gain, torch.full((4,), 5.25))
    # 600 s less GPTQ_RESERVE_SECONDS 12: the log's "gptq:reserving 12s, effective=588000ms".
    assert config.train.max_wallclock_seconds * 1000 == 588_000
    assert (config.train.train_batch_tokens, config.train.train_seq_len) == (786_432, 2048)


def test_parallel_residual_from_a_layer():
    with torch.device("meta"):
        model = GPTConfig(num_layers=11, components=(ParallelResidualConfig(first_layer=7),)).build(64)
    assert [b.parallel for b in model.blocks] == [False] * 7 + [True] * 4


@pytest.mark.parametrize("frac, expected", [(0.0, 1.0), (0.28, 1.0), (0.64, 0.5), (0.91, 0.125), (1.0, 0.0)])
def test_warmdown_frac_is_the_records_lr_mul(frac, expected):
    # lr_mul(frac) = 1 before 1 - 0.72, then (1 - frac) / 0.72, floored at MIN_LR 0.
    cap = 588_000.0
    sched = WallclockWarmdownConfig(warmdown_frac=0.72).build()
    assert math.isclose(
        sched(123, frac * cap, iterations=20_000, max_wallclock_ms=cap), expected, abs_tol=1e-12
    )
    steps = StepWarmdownConfig(warmdown_frac=0.72).build()
    assert math.isclose(
        steps(round(frac * 100), 9e9, iterations=100, max_wallclock_ms=cap), expected, abs_tol=1e-12
    )


def test_smoke_profile_is_scaled_down_and_says_so(config):
    smoke = apply_overrides(config, config.cpu_profile, "cpu profile")
    assert smoke.data.vocab_size == 1024 and smoke.model.model_dim == 128 and smoke.model.num_layers == 11
    assert "SCALED-DOWN" in smoke.blurb and smoke.train.iterations == 40
    loop = next(c for c in smoke.model.components if type(c).__name__ == "RecycledCoreConfig")
    assert loop.clock == "steps" and loop.start_frac == 0.35
