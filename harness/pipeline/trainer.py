"""The training loop under a wallclock cap, as the upstream baseline times it.

From the upstream `train_gpt.py` (docs/protocol.md §5.1-5.2, docs/techniques.md §5.1 and §10):
* only the training loop is timed: compile-priming steps (then undone) and periodic
  validation are excluded from ``train_time``;
* the LR multiplier is a linear warmdown estimated from the wallclock every step, hitting
  zero at the cap (step-based when there is no cap);
* training stops after the first step whose cumulative train time reaches the cap, with
  the stop flag MAX-reduced so every rank stops on the same step;
* one micro-batch per ``grad_accum_steps`` lets 1 GPU emulate the 8-GPU global batch;
* a model with a late switch (`harness.api.protocols.TrainingProgress`, e.g. depth recurrence
  from 35% of training, PR #1493) hears the schedule's clock before every step, and compile
  priming also runs its end-of-training state, as PR #1493 primes its loop.

A NaN or infinite loss aborts with the step number; everything logged so far stays.

With checkpoints on (``train.checkpoint_every_minutes``, ``train.stop_after_step`` or a resume),
the loop pauses its clock after the steps that `harness.pipeline.resume.TrainingCheckpoints` says
are due and lets it save (and stop, at ``stop_after_step`` or on Ctrl-C); ``run(resume=...)``
continues from a restored step, clock and stop state. That code is reached by name only, so no
bundle carries it (a shipped run never checkpoints).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.api.by_name import import_by_name
from harness.api.config import RunConfig
from harness.api.context import TrainContext
from harness.api.errors import ConfigError, TrainingDiverged
from harness.api.protocols import TrainingProgress
from harness.api.warmdown import lr_multiplier
from harness.pipeline.distributed import all_reduce_max
from harness.pipeline.eval import autocast_context


@dataclass(frozen=True)
class TrainResult:
    """How training ended."""

    steps: int
    train_time_ms: float
    stopped_early: bool
    last_val: dict[str, float] | None


def grad_accum_steps(config: RunConfig, world_size: int) -> int:
    """Micro-batches per step: configured, or 8 // world_size so the global batch matches 8 GPUs."""
    if config.train.grad_accum_steps > 0:
        return config.train.grad_accum_steps
    if 8 % world_size != 0:
        raise ConfigError(
            f"world size {world_size} must divide 8 for the default grad accumulation; "
            "set train.grad_accum_steps explicitly"
        )
    return 8 // world_size


class Trainer:
    """Runs priming, the timed loop, periodic validation and the stop rule.

    ``validate`` evaluates the current model and returns ``{"val_loss", "val_bpb"}``;
    ``hooks`` is the plugin manager's hook relay; ``clock`` returns seconds (tests pass a
    fake one to check the wallclock stop without waiting); ``checkpointer`` is the run's
    `harness.pipeline.resume.TrainingCheckpoints`, or None when it does not checkpoint.
    """

    def __init__(
        self,
        ctx: TrainContext,
        *,
        train_model: torch.nn.Module,
        loader: Any,
        validate: Callable[[], dict[str, float]],
        hooks: Any,
        clock: Callable[[], float] = time.perf_counter,
        checkpointer: Any = None,
    ) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.train
        self.train_model = train_model  # the DDP/compiled wrapper; ctx.model is the raw module
        self.loader = loader
        self.validate = validate
        self.hooks = hooks
        self.clock = clock
        self.accum = grad_accum_steps(ctx.config, ctx.dist.world_size)
        self.max_ms = 1000.0 * self.cfg.max_wallclock_seconds
        self.checkpointer = checkpointer
        schedule = ctx.config.schedule
        self.schedule = schedule.build() if schedule is not None else self._default_schedule

    def _default_schedule(
        self, step: int, elapsed_ms: float, *, iterations: int, max_wallclock_ms: float
    ) -> float:
        return lr_multiplier(
            step,
            elapsed_ms,
            iterations=iterations,
            warmdown_iters=self.cfg.warmdown_iters,
            max_wallclock_ms=max_wallclock_ms,
        )

    # -- one optimizer step -------------------------------------------------------------
    def _autocast(self):
        return autocast_context(self.ctx.dist.device, self.ctx.autocast_dtype)

    def _train_step(self, step: int, lr_scale: float) -> torch.Tensor:
        """Forward/backward over every micro-batch, clip, update; returns the mean loss (on device)."""
        model, opt = self.train_model, self.ctx.optimizer
        total = torch.zeros((), device=self.ctx.dist.device)
        for micro in range(self.accum):
            x, y = self.loader.next_batch(self.cfg.train_batch_tokens, self.cfg.train_seq_len, self.accum)
            # DDP syncs gradients only on the last micro-batch, as upstream.
            sync = micro == self.accum - 1 or not hasattr(model, "no_sync")
            with nullcontext() if sync else model.no_sync(), self._autocast():
                logits = model(x)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
            (loss / self.accum).backward()
            total += loss.detach()
        # Norms summed in the upstream script's order (ClipOrder); the module is reached by name
        # (harness.api.by_name.GRAD_CLIP_MODULE, spelled out so that no bundle ships the constant).
        if self.cfg.grad_clip_norm > 0:
            import_by_name("harness.pipeline.grad_clip").clip_gradients(
                self.ctx.model, self.cfg.grad_clip_norm
            )
        opt.step(step, lr_scale)
        opt.zero_grad()
        return total / self.accum

    # -- late switches ------------------------------------------------------------------
    def _progress(self, step: int, elapsed_ms: float, quiet: bool = False) -> list[str]:
        """Tell a `TrainingProgress` model the schedule's clock; log what it changed."""
        model = self.ctx.model
        if not isinstance(model, TrainingProgress):
            return []
        lines = model.on_train_progress(
            step, elapsed_ms, iterations=self.cfg.iterations, max_wallclock_ms=self.max_ms
        )
        for line in [] if quiet else lines:
            self.ctx.log.log(line, event="train_progress", step=step, change=line)
        return lines

    # -- priming ------------------------------------------------------------------------
    def prime(self) -> None:
        """Run ``warmup_steps`` real steps (to trigger compilation), then undo them all.

        A model whose forward changes late in training is primed in both states: at the
        start of training, then (when that differs) at its end."""
        n = self.cfg.warmup_steps
        if n <= 0:
            return
        model_state = copy.deepcopy(self.ctx.model.state_dict())
        opt_state = copy.deepcopy(self.ctx.optimizer.state_dict())
        self._progress(0, 0.0, quiet=True)
        for i in range(1, n + 1):
            self._train_step(i, 1.0)
            if i <= 10 or i == n or i % 10 == 0:
                self.ctx.log.log(f"warmup_step:{i}/{n}")
        late = self._progress(self.cfg.iterations, max(self.max_ms, 0.0), quiet=True)
        if late:
            self.ctx.log.log(f"late_warmup: priming the end-of-training state: {late[0]}")
            for i in range(1, n + 1):
                self._train_step(i, 1.0)
                if i <= 10 or i == n or i % 10 == 0:
                    self.ctx.log.log(f"late_warmup_step:{i}/{n}")
            self._progress(0, 0.0, quiet=True)
        self.ctx.model.load_state_dict(model_state)
        self.ctx.optimizer.load_state_dict(opt_state)
        self.ctx.optimizer.zero_grad()
        self.loader.reset()

    # -- the timed loop -----------------------------------------------------------------
    def _sync(self) -> None:
        if self.ctx.dist.device.type == "cuda":
            torch.cuda.synchronize()

    def _maybe_eval(self, step: int, last: bool, train_ms: float) -> dict[str, float] | None:
        every = self.cfg.val_loss_every
        if not (last or (every > 0 and step % every == 0)):
            return None
        metrics = self.validate()
        avg = train_ms / max(step, 1)
        self.ctx.log.log(
            f"step:{step}/{self.cfg.iterations} val_loss:{metrics['val_loss']:.4f} "
            f"val_bpb:{metrics['val_bpb']:.4f} train_time:{train_ms:.0f}ms step_avg:{avg:.2f}ms",
            event="val",
            step=step,
            train_time_ms=train_ms,
            **metrics,
        )
        return metrics

    def _agreed_time(self, train_ms: float) -> float:
        """The slowest rank's train time. Every rank uses it for the stop rule and the LR
        schedule, so all stop on the same step and apply the same LR (and averaging/QAT
        plugins, which key off ``lr_scale``, act on the same step everywhere)."""
        return all_reduce_max(train_ms, self.ctx.dist)

    def _log_step(self, step: int, loss: float, train_ms: float, lr_scale: float, force: bool) -> None:
        every = self.cfg.train_log_every
        if force or step <= 10 or (every > 0 and step % every == 0):
            self.ctx.log.log(
                f"step:{step}/{self.cfg.iterations} train_loss:{loss:.4f} train_time:{train_ms:.0f}ms "
                f"step_avg:{train_ms / step:.2f}ms",
                event="train",
                step=step,
                train_loss=loss,
                train_time_ms=train_ms,
                lr_scale=lr_scale,
            )

    def run(self, resume: dict[str, Any] | None = None) -> TrainResult:
        """Train until ``iterations`` or the wallclock cap; validate as configured.

        ``resume`` is the trainer state a checkpoint restored (step, clock, stop step); the
        model, optimizer, loader and plugins must already hold that step's state. With a
        checkpointer, Ctrl-C stops training after the running step with a checkpoint saved
        (`harness.pipeline.failure.RunInterrupted`); a second Ctrl-C stops at once.
        """
        ckpt = self.checkpointer
        with nullcontext() if ckpt is None else ckpt.ctrl_c_between_steps():
            return self._run(resume)

    def _run(self, resume: dict[str, Any] | None) -> TrainResult:
        ctx, cfg, ckpt = self.ctx, self.cfg, self.checkpointer
        self._sync()
        train_ms, step, stop_at, last_val, agreed_ms = 0.0, 0, None, None, 0.0
        if resume is not None:
            step, train_ms, agreed_ms, stop_at = ckpt.restart(ctx, resume)
        self._progress(step, agreed_ms)  # a resumed run recomputes its late switches here
        t0 = self.clock()
        while True:
            last = step == cfg.iterations or (stop_at is not None and step >= stop_at)
            if last or (cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0):
                self._sync()
                train_ms += 1000.0 * (self.clock() - t0)
                last_val = self._maybe_eval(step, last, train_ms) or last_val
                t0 = self.clock()  # validation is not training time
            if last:
                break
            scale = float(
                self.schedule(step, agreed_ms, iterations=cfg.iterations, max_wallclock_ms=self.max_ms)
            )
            self._progress(step, agreed_ms)
            loss = self._train_step(step + 1, scale)
            step += 1
            ctx.step, ctx.lr_scale = step, scale
            self.hooks.pg_step_end(ctx=ctx)
            loss_value = float(loss.item())  # the one host sync per step (upstream has it too)
            now_ms = train_ms + 1000.0 * (self.clock() - t0)
            ctx.train_time_ms = now_ms
            if not math.isfinite(loss_value):
                ctx.log.log(
                    f"step:{step}/{cfg.iterations} train_loss:{loss_value} aborting: non-finite loss",
                    event="diverged",
                    step=step,
                )
                raise TrainingDiverged(
                    f"training loss became {loss_value} at step {step}; "
                    "run aborted, files written so far are kept"
                )
            agreed_ms = self._agreed_time(now_ms)
            stop_now = stop_at is None and self.max_ms > 0 and agreed_ms >= self.max_ms
            self._log_step(step, loss_value, now_ms, scale, force=stop_now or step == cfg.iterations)
            if stop_now:
                stop_at = step
            if ckpt is not None and ckpt.pause_due(step, agreed_ms):
                self._sync()
                train_ms += 1000.0 * (self.clock() - t0)
                ckpt.pause(ctx, step, train_ms, agreed_ms, stop_at)  # may end training here
                t0 = self.clock()  # saving is not training time
        if ckpt is not None:
            ckpt.finish(ctx, step, train_ms, agreed_ms, stop_at)
        ctx.train_time_ms = train_ms
        stopped_early = stop_at is not None and step < cfg.iterations
        if stopped_early:
            ctx.log.log(
                f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{cfg.iterations}",
                event="stopping_early",
                step=step,
                train_time_ms=train_ms,
            )
        if ctx.dist.device.type == "cuda":
            ctx.log.log(
                f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
                f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB"
            )
        return TrainResult(step, train_ms, stopped_early, last_val)
