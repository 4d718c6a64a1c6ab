"""Magnitude pruning before quantization: zero the smallest 3% of each large matrix.

Source: record T1 (records/track_10min_16mb/2026-03-20_10L_Int5MLP_MuonWD04_SWA50, the
"Magnitude pruning" block after ``final_model.pt`` is saved), docs/techniques.md §7.2 and
§13 row 13. In every 2-D float tensor with more than 65,536 elements (the fp16-kept token
embedding included; bigram.proj, exactly 65,536, excluded) the entries with |w| strictly
below that tensor's 3% quantile of |w| become 0, so the quantized codes hold more zeros and
compress better. The pre-quantization score is taken before this runs, as in T1.

As upstream, the quantile is computed in fp32 and the comparison runs in the tensor's own
dtype (torch promotes the 0-d threshold to bf16 for a bf16 table). Differences: this sees
the exported state dict (``pg_before_quantize``), so 2-D float buffers would be pruned too
(T1 walks ``named_parameters``; neither model has such buffers), and the quantile has no
2**24-element limit (`harness.api.quantization.linear_quantile`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.quantization import linear_quantile
from harness.api.registry import Registry

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.api.context import TrainContext


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Settings of magnitude pruning (T1's values by default)."""

    fraction: float = 0.03
    """Quantile of |w| below which entries are zeroed, per tensor; 0 disables pruning."""
    min_numel: int = 65_536
    """Only 2-D float tensors with more elements than this are pruned."""

    def __post_init__(self) -> None:
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise ConfigError(f"prune fraction: expected a number in [0, 1), got {f!r}")
        n = self.min_numel
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"prune min_numel: expected an integer >= 0, got {n!r}")

    def build(self) -> MagnitudePruner:
        """The run plugin these settings describe."""
        return MagnitudePruner(self)


def prune_tensor(t: torch.Tensor, fraction: float) -> int:
    """Zero, in place, the entries of ``t`` with |w| below its ``fraction`` quantile; returns how many."""
    if fraction == 0 or t.numel() == 0:
        return 0
    threshold = linear_quantile(t.detach().abs().float().reshape(1, -1), fraction)[0]
    mask = t.abs() < threshold.to(t.dtype)
    t.masked_fill_(mask, 0)
    return int(mask.sum())


class MagnitudePruner:
    """Observer: prunes the state dict about to be quantized and reports what it did."""

    def __init__(self, cfg: PruneConfig) -> None:
        self.cfg = cfg
        self.tensors: int | None = None
        self.zeroed: int | None = None

    def eligible(self, t: torch.Tensor) -> bool:
        """Whether ``t`` is pruned: a 2-D float tensor with more than ``min_numel`` elements."""
        return t.is_floating_point() and t.ndim == 2 and t.numel() > self.cfg.min_numel

    @hookimpl
    def pg_before_quantize(self, ctx: TrainContext, state_dict: dict[str, Any]) -> None:
        """Prune every eligible tensor of ``state_dict`` in place and log one summary line."""
        targets = [t for t in state_dict.values() if isinstance(t, torch.Tensor) and self.eligible(t)]
        with torch.no_grad():
            zeroed = sum(prune_tensor(t, self.cfg.fraction) for t in targets)
        self.tensors, self.zeroed = len(targets), zeroed
        ctx.log.log(
            f"prune:fraction:{self.cfg.fraction:g} tensors:{len(targets)} zeroed:{zeroed}",
            event="prune",
            fraction=self.cfg.fraction,
            tensors=len(targets),
            zeroed=zeroed,
        )

    @hookimpl
    def pg_report(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        """Add ``pruned_fraction`` and ``pruned_weights`` (None where no pruning ran, e.g. eval-only)."""
        record["pruned_fraction"] = self.cfg.fraction
        record["pruned_weights"] = self.zeroed


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``prune`` as an algorithm (it changes the exported weights)."""
    registry.register("algorithm", "prune", PruneConfig)
