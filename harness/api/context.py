"""What a hook sees: `TrainContext` (the live model and optimizers, where the run stands),
`DistInfo` (where this process sits in the run) and `RunLog` (the run's log).

Every ``pg_*`` hook that runs during training takes ``ctx: TrainContext`` (see
`harness.api.hooks` for when each fires). The context is built by the pipeline; plugins
read it, keep references to ``ctx.model`` where their docs allow, and talk to each other
and to their own later hooks only through the two typed channels below: ``averaging``
(which weight average was swapped in) and ``notes`` (JSON values that survive a resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.api.config import RunConfig
    from harness.api.protocols import CalibrationData, OptimizerSet

JSONScalar = str | int | float | bool | None


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank is active."""
        return self.backend is not None and self.world_size > 1


class RunLog(Protocol):
    """The run's log: ``train.log`` lines (rank 0 only) and ``metrics.jsonl`` events."""

    def log(self, line: str, event: str | None = None, **fields: Any) -> None:
        """Write ``line`` to ``train.log`` and, with ``event``, a JSON event with ``fields``."""

    def event(self, name: str, **fields: Any) -> None:
        """Write a JSON event only."""


@dataclass
class TrainContext:
    """What hooks see: the live model and optimizers, and where the run stands."""

    config: RunConfig
    model: torch.nn.Module
    """The raw model (never the compiled or DDP wrapper)."""
    optimizer: OptimizerSet | None
    """None in an eval-only run."""
    log: RunLog
    dist: DistInfo
    autocast_dtype: torch.dtype | None
    step: int = 0
    """The 1-based optimizer step just finished (0 before training)."""
    lr_scale: float = 1.0
    """The schedule multiplier that step used."""
    train_time_ms: float = 0.0
    run_dir: Path | None = None
    """The run folder, where a plugin may write an extra file (an export) in ``pg_report``."""
    averaging: str | None = None
    """The name of the weight average swapped into ``model`` at ``pg_train_end`` (``"swa"``,
    ``"ema"``), or None: the first averaging plugin to swap sets it, later ones defer."""
    notes: dict[str, JSONScalar] = field(default_factory=dict)
    """JSON values a plugin leaves for its own later hooks or the report (``late_qat_step``);
    checkpointed, so they survive ``--resume``. Keys are prefixed with the plugin's name."""
    calibration: CalibrationData | None = None
    """Training batches for calibration, set by the export before ``pg_before_quantize`` (rank
    0 only; None before then, on other ranks, and in a shipped file whose configuration does not
    name ``harness.api.by_name.CALIBRATION_MODULE``): the one way a plugin may read tokens there."""
