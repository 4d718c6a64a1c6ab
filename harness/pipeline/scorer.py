"""The harness's scorer for a run: standard and sliding-window evaluation of a model on the
run's validation tokens, sized from the run config. No plugin is involved in scoring; the
numbers come from `harness.pipeline.eval` (BPB, the sliding window) and `harness.pipeline.bpb` (byte tables).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.api.config import RunConfig
from harness.api.context import DistInfo
from harness.api.errors import ConfigError
from harness.pipeline.bpb import ByteLUTs
from harness.pipeline.eval import EvalResult, evaluate_sliding, evaluate_standard


class Scorer:
    """Evaluates a model with the harness's scorer (no plugin is involved)."""

    def __init__(
        self,
        config: RunConfig,
        dist: DistInfo,
        luts: ByteLUTs,
        val_tokens: torch.Tensor,
        autocast: torch.dtype,
        accum: int,
    ):
        self.config, self.dist, self.luts, self.val = config, dist, luts, val_tokens
        self.autocast = autocast
        seq = config.train.train_seq_len
        self.batch_seqs = config.eval.val_batch_size // (dist.world_size * accum) // seq
        if self.batch_seqs < 1:
            raise ConfigError(
                f"eval.val_batch_size={config.eval.val_batch_size} is too small: "
                f"it must hold one sequence of {seq} tokens per rank and micro-batch "
                f"(world {dist.world_size} x accum {accum})"
            )

    def standard(self, model: torch.nn.Module, deadline: float | None = None) -> EvalResult:
        """Non-overlapping ``train_seq_len`` windows (periodic val, pre-quant, roundtrip).

        ``deadline`` (a ``time.perf_counter()`` value) stops it between batches with
        `EvalTimeLimit`.
        """
        was_training = model.training
        model.eval()
        try:
            return evaluate_standard(
                model,
                self.val,
                self.luts,
                seq_len=self.config.train.train_seq_len,
                batch_seqs=self.batch_seqs,
                device=self.dist.device,
                autocast_dtype=self.autocast,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                deadline=deadline,
            )
        finally:
            model.train(was_training)

    def window(self) -> int:
        """The sliding-window length."""
        return self.config.eval.eval_seq_len or self.config.train.train_seq_len

    def sliding_enabled(self) -> bool:
        """True when the stride is smaller than the window (otherwise it equals standard)."""
        return 0 < self.config.eval.eval_stride < self.window()

    def sliding_batch_seqs(self) -> int:
        """Windows per sliding batch: ``eval.eval_batch_seqs``, raised on CUDA to as many
        windows as the tokens one standard-evaluation batch already puts through the device
        (the fast path keeps no full-window logits, so it needs less memory per token)."""
        configured = self.config.eval.eval_batch_seqs
        if self.dist.device.type != "cuda":
            return configured
        return max(configured, self.batch_seqs * self.config.train.train_seq_len // self.window())

    def sliding(self, model: torch.nn.Module, deadline: float | None = None) -> EvalResult:
        """Every target scored once with ``window - stride`` tokens of context (docs/protocol.md §3.2-3.3).

        The hidden forward is compiled on CUDA when ``train.compile`` is on; ``deadline``
        stops it between batches with `EvalTimeLimit`.
        """
        model.eval()
        return evaluate_sliding(
            model,
            self.val,
            self.luts,
            window=self.window(),
            stride=self.config.eval.eval_stride,
            batch_seqs=self.sliding_batch_seqs(),
            device=self.dist.device,
            autocast_dtype=self.autocast,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            deadline=deadline,
            compile_model=self.config.train.compile,
        )


def fmt_scores(result: EvalResult, exact: bool) -> str:
    """``val_loss:… val_bpb:…`` with 4 decimals, or 8 for the ``_exact`` lines (upstream style)."""
    digits = 8 if exact else 4
    return f"val_loss:{result.val_loss:.{digits}f} val_bpb:{result.val_bpb:.{digits}f}"


def log_score(
    log: Any, name: str, head: str, result: EvalResult, timing: str, event: str, **fields: Any
) -> None:
    """A scored pass's two lines, the upstream way: ``name [head] <4 decimals> <timing>``, with
    its JSON event (``val_loss``, ``val_bpb``, then ``fields`` in order, then ``tokens`` and
    ``bytes``), and ``name_exact [head] <8 decimals>``. The leaderboard parses both."""
    lead = f"{name} {head} " if head else f"{name} "
    log.log(
        f"{lead}{fmt_scores(result, False)} {timing}",
        event=event,
        val_loss=result.val_loss,
        val_bpb=result.val_bpb,
        **fields,
        tokens=result.tokens,
        bytes=result.bytes,
    )
    log.log(f"{name}_exact {head + ' ' if head else ''}{fmt_scores(result, True)}")


def scoring_window(config: RunConfig) -> int:
    """The sliding-window length of ``config``."""
    return config.eval.eval_seq_len or config.train.train_seq_len
