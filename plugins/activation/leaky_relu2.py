"""Squared leaky ReLU with a chosen slope (kind ``activation``, name ``leaky_relu2``):
f(u) = leaky_relu(u, s)², i.e. u² for u > 0 and s²·u² below.

PR #1573 runs s = 0.5 (the GPT's built-in ``mlp_activation="leaky_relu2"``, with which this
plugin at its default slope computes identical values); s = 0 is modded-nanogpt's relu².
Other slopes are a knob later records tune. Switch: ``GPTConfig(mlp_activation=
LeakyReLU2Config(negative_slope=0.3))``. No parameters, so nothing changes in the artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class LeakyReLU2Config:
    """The slope s of leaky_relu(u, s)²."""

    negative_slope: float = 0.5
    """s in [0, 1]: 0.5 as PR #1573, 0 gives relu²."""

    def __post_init__(self) -> None:
        s = self.negative_slope
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s <= 1:
            raise ConfigError(f"leaky_relu2.negative_slope: expected a number in [0, 1], got {s!r}")

    def build(self) -> LeakyReLU2:
        """The elementwise module."""
        return LeakyReLU2(float(self.negative_slope))


class LeakyReLU2(nn.Module):
    """leaky_relu(u, s)²."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, u: Tensor) -> Tensor:
        return F.leaky_relu(u, negative_slope=self.negative_slope).square()


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``LeakyReLU2Config`` as the ``activation`` ``leaky_relu2``."""
    registry.register("activation", "leaky_relu2", LeakyReLU2Config)
