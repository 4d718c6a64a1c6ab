"""`require_finite`, the initial-value check shared by the gate and temperature plugins."""

from __future__ import annotations

import math

import pytest

from harness.api.errors import ConfigError
from harness.api.field_checks import require_finite
from plugins.arch.gated_attention import GatedAttentionConfig
from plugins.arch.qk_temperature import QKTemperatureConfig
from plugins.arch.skip_gates import SkipGatesConfig
from plugins.arch.smeargate import SmearGateConfig


def test_finite_ints_and_floats_pass_as_floats():
    assert require_finite(3, "f") == 3.0 and isinstance(require_finite(3, "f"), float)
    assert require_finite(-0.25, "f") == -0.25


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, False, "1.0", None, [1.0]])
def test_everything_else_is_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match=r"^x\.init: expected a finite number, got "):
        require_finite(bad, "x.init")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (lambda v: SkipGatesConfig(init=v), "skip_gates.init"),
        (lambda v: QKTemperatureConfig(init=v), "qk_temperature.init"),
        (lambda v: GatedAttentionConfig(bias_init=v), "gated_attention.bias_init"),
        (lambda v: SmearGateConfig(gate_init=v), "smeargate.gate_init"),
    ],
)
def test_each_plugin_refuses_a_bool_or_non_finite_initial_value(config, field):
    for bad in (math.nan, True):
        with pytest.raises(ConfigError, match=rf"^{field}: expected a finite number"):
            config(bad).check(None)
    config(0.5).check(None)  # a finite value passes
