"""What only a run that checkpoints or resumes executes: the ``--resume`` folder checks, and the
checkpoint cadence of the timed loop (every ``train.checkpoint_every_minutes`` of training, at
``train.stop_after_step``, on Ctrl-C) with the trainer clock a resume restores.

A module of its own, imported by name only (`harness.pipeline.setup.checkpoint_module`), because
a record run never checkpoints: ``train.checkpoint_every_minutes`` and ``train.stop_after_step``
are not recorded in a shipped ``train_gpt.py`` (`harness.pipeline.setup.NOT_REPLAYED`), so no
bundle carries this code nor the checkpoint format it uses (pgolf issue 13: every shipped byte
counts). The file format and the `Checkpointer` that writes and restores a run's state are
`harness.pipeline.checkpoint`; the loop that calls `TrainingCheckpoints` is
`harness.pipeline.trainer`.

Saves are decided on the agreed (slowest-rank) train time, so every rank saves on the same step,
with the clock paused as for validation. Ctrl-C is held until the running step ends, then a
checkpoint is saved and training stops, so an interrupted run can be resumed.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.api.config import RunConfig
from harness.api.context import DistInfo, TrainContext
from harness.api.errors import ConfigError, TrainingInterrupted
from harness.pipeline.checkpoint import CHECKPOINT_NAME, Checkpointer, check_resume_dir
from harness.pipeline.distributed import all_reduce_max
from harness.pipeline.failure import RunInterrupted


def resume_run_dir(run_dir: Path, run_id: str | None, config: RunConfig, world_size: int) -> tuple[str, Path]:
    """The interrupted run's own id and folder (``--resume RUN_DIR``), checked on every rank before
    anything in it changes: unfinished, holding a checkpoint of this resolved config and world size."""
    run_dir = Path(run_dir).resolve()
    if (run_dir / "submission.json").exists():
        raise ConfigError(
            f"--resume {run_dir}: the run already finished (submission.json exists); nothing to resume"
        )
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise ConfigError(
            f"--resume {run_dir}: no {CHECKPOINT_NAME} there "
            "(the run must have had train.checkpoint_every_minutes > 0)"
        )
    exported = sorted(run_dir.glob("*.pgolf"))
    if exported:
        raise ConfigError(
            f"--resume {run_dir}: training already finished and exported {exported[0].name}; "
            f"score it with `pgolf rescore {run_dir}`"
        )
    if run_id is not None and run_id != run_dir.name:
        raise ConfigError(
            f"--resume {run_dir} continues run {run_dir.name}; --run-id {run_id} names another run"
        )
    check_resume_dir(run_dir, config, world_size)
    return run_dir.name, run_dir


def checkpoint_every_ms(train: Any) -> float:
    """``train.checkpoint_every_minutes`` in milliseconds, after checking both checkpoint settings."""
    minutes, stop = train.checkpoint_every_minutes, train.stop_after_step
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, (int, float))
        or not math.isfinite(minutes)
        or minutes < 0
    ):
        raise ConfigError(
            f"train.checkpoint_every_minutes: expected a number >= 0 (0 = off), got {minutes!r}"
        )
    if isinstance(stop, bool) or not isinstance(stop, int) or stop < 0:
        raise ConfigError(f"train.stop_after_step: expected an integer >= 0 (0 = off), got {stop!r}")
    return 60_000.0 * minutes


class TrainingCheckpoints(Checkpointer):
    """The run's `Checkpointer`, plus when the timed loop saves and what a resume restores.

    The trainer asks `pause_due` after every step; when it is true the trainer stops its clock
    and calls `pause`, which saves and may end training (`TrainingInterrupted` at
    ``train.stop_after_step``, `RunInterrupted` on Ctrl-C). `finish` writes the last step's
    checkpoint after the loop when checkpoints are periodic.
    """

    def __init__(
        self, run_dir: Path, config: RunConfig, dist: DistInfo, *, loader: Any, observers: list[Any]
    ) -> None:
        self.every_ms = checkpoint_every_ms(config.train)
        self.stop_after_step = config.train.stop_after_step
        super().__init__(run_dir, config, dist, loader=loader, observers=observers)
        self.last_ms, self.last_step = 0.0, 0
        """Agreed train time and step of the last save (or of the restored checkpoint)."""
        self.interrupted = False
        """Every rank agreed that some rank saw Ctrl-C (asked once per step)."""
        self._ctrl_c: bool | None = None  # None: Ctrl-C is not caught between steps

    # -- before the timed loop ----------------------------------------------------------
    def begin(self, ctx: TrainContext, resume: bool) -> dict[str, Any] | None:
        """After priming (which resets what it touched): log the plugins a resume restarts and,
        with ``resume``, restore the checkpoint; returns its trainer state (None without)."""
        if self.stateless:
            ctx.log.log(
                "checkpoint: plugins without checkpoint state (a resume restarts them): "
                f"{', '.join(self.stateless)}"
            )
        if not resume:
            return None
        start = self.load(ctx)
        ctx.log.log(
            f"resume: step:{start['step']} train_time:{start['train_ms']:.0f}ms from {self.path}",
            event="resume",
            step=start["step"],
            train_time_ms=start["train_ms"],
        )
        return start

    def restart(self, ctx: TrainContext, resume: dict[str, Any]) -> tuple[int, float, float, int | None]:
        """The restored trainer state as the loop's step, train time, agreed time and stop step;
        ``ctx`` hears the step, LR scale and train time it had."""
        step, train_ms, agreed_ms = int(resume["step"]), float(resume["train_ms"]), float(resume["agreed_ms"])
        stop_at = None if resume["stop_at"] is None else int(resume["stop_at"])
        ctx.step, ctx.lr_scale, ctx.train_time_ms = step, float(resume["lr_scale"]), train_ms
        self.last_ms, self.last_step = agreed_ms, step
        return step, train_ms, agreed_ms, stop_at

    # -- inside the timed loop ----------------------------------------------------------
    def pause_due(self, step: int, agreed_ms: float) -> bool:
        """True when training pauses after ``step``: a checkpoint is due, or a rank saw Ctrl-C.

        Decided on values every rank shares, so all ranks pause on the same step; the Ctrl-C
        question is one collective, asked after the save when one is due (as `pause` does)."""
        if step == self.stop_after_step or (self.every_ms > 0 and agreed_ms - self.last_ms >= self.every_ms):
            return True
        self.interrupted = self._ctrl_c_agreed()
        return self.interrupted

    def pause(
        self, ctx: TrainContext, step: int, train_ms: float, agreed_ms: float, stop_at: int | None
    ) -> None:
        """Save this step (the trainer's clock is stopped); end training at ``stop_after_step``
        or on Ctrl-C."""
        if not self.interrupted:  # a checkpoint is due
            self._save(ctx, step, train_ms, agreed_ms, stop_at)
            if step == self.stop_after_step:
                ctx.log.log(
                    f"stopping: train.stop_after_step:{step} (checkpoint saved; continue with --resume)",
                    event="interrupted",
                    step=step,
                )
                raise TrainingInterrupted(
                    f"stopped after step {step} (train.stop_after_step); checkpoint saved in {ctx.run_dir}"
                )
            self.interrupted = self._ctrl_c_agreed()
        if self.interrupted:
            if self.last_step != step:
                self._save(ctx, step, train_ms, agreed_ms, stop_at)
            raise RunInterrupted(
                f"interrupted (Ctrl-C) after step {step}: checkpoint saved in {ctx.run_dir}; "
                f"continue with --resume {ctx.run_dir}"
            )

    def finish(
        self, ctx: TrainContext, step: int, train_ms: float, agreed_ms: float, stop_at: int | None
    ) -> None:
        """After the loop: save the last step when checkpoints are periodic and it has none yet."""
        if self.every_ms > 0 and self.last_step != step:
            self._save(ctx, step, train_ms, agreed_ms, stop_at)

    def _save(
        self, ctx: TrainContext, step: int, train_ms: float, agreed_ms: float, stop_at: int | None
    ) -> None:
        state = {
            "step": step,
            "train_ms": train_ms,
            "agreed_ms": agreed_ms,
            "stop_at": stop_at,
            "lr_scale": ctx.lr_scale,
        }
        t0 = time.perf_counter()
        size = self.save(ctx, state)
        ctx.log.log(
            f"checkpoint: step:{step} train_time:{train_ms:.0f}ms bytes:{size} "
            f"save_time:{1000.0 * (time.perf_counter() - t0):.0f}ms",
            event="checkpoint",
            step=step,
            train_time_ms=train_ms,
            bytes=size,
        )
        self.last_ms, self.last_step = agreed_ms, step

    # -- Ctrl-C ---------------------------------------------------------------------------
    @contextmanager
    def ctrl_c_between_steps(self) -> Iterator[None]:
        """Hold Ctrl-C (SIGINT) until the running step ends; a second one stops at once. Only the
        main thread can take signals, so elsewhere Ctrl-C stays as it was."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._ctrl_c = False

        def on_sigint(signum: int, frame: Any) -> None:
            if self._ctrl_c:  # the second Ctrl-C does not wait for the step to end
                raise KeyboardInterrupt
            self._ctrl_c = True

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
            self._ctrl_c = None

    def _ctrl_c_agreed(self) -> bool:
        """True on every rank once any rank saw Ctrl-C (one collective per step)."""
        if self._ctrl_c is None:
            return False
        return all_reduce_max(1.0 if self._ctrl_c else 0.0, self.dist) > 0
