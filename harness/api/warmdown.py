"""The upstream LR warmdown as a formula: linear to zero at the wallclock cap, re-estimated
from the time per step so far, as every upstream record's training loop computes it
(docs/protocol.md). Shared by the trainer's default schedule and the schedule plugins.
"""

from __future__ import annotations


def lr_multiplier(
    step: int,
    elapsed_ms: float,
    *,
    iterations: int,
    warmdown_iters: int,
    max_wallclock_ms: float,
    warmdown_frac: float = 0.0,
) -> float:
    """Upstream warmdown: linear to 0 at the cap, re-estimated from the time per step so far.

    Without a cap (``max_wallclock_ms <= 0``) it decays over the last ``warmdown_iters`` of
    ``iterations`` steps instead. With ``warmdown_frac`` > 0 the decay spans that fraction of
    the run instead of ``warmdown_iters`` steps (PR #1493's WARMDOWN_FRAC 0.72): the multiplier
    is min(1, (1 - p) / warmdown_frac), floored at 0, with p = elapsed / cap, or
    step / iterations without a cap.
    """
    if warmdown_frac > 0:
        p = elapsed_ms / max_wallclock_ms if max_wallclock_ms > 0 else step / max(iterations, 1)
        return min(1.0, max((1.0 - p) / warmdown_frac, 0.0))
    if warmdown_iters <= 0:
        return 1.0
    if max_wallclock_ms <= 0:
        start = max(iterations - warmdown_iters, 0)
        return max((iterations - step) / warmdown_iters, 0.0) if step >= start else 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = warmdown_iters * step_ms
    remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0
