"""The harness's two scoring passes: standard (non-overlapping) and sliding-window evaluation.

Both follow upstream parameter-golf `train_gpt.py` (PROTOCOL.md §2.4 and §3.3, TECHNIQUES.md
§7): per-token natural-log cross-entropy summed in float64, bytes from the tokenizer tables
of `harness.bpb`, contiguous work split across ranks and an all-reduce (SUM) of the three
sums. The sliding window is the "fixed" variant of the 2026-04-01+ records: context =
window - stride, windows only while they still have targets to score, so every target is
scored exactly once (the older variants re-scored the tail).

The model only supplies logits; the loss is computed here so no plugin can change how it is
scored. Bump `EVAL_VERSION` whenever a number produced here could change.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.bpb import ByteLUTs, count_bytes
from harness.errors import ConfigError, DataError

EVAL_VERSION = 1

Forward = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]


@dataclass
class EvalResult:
    """Sums of one evaluation (all ranks once all-reduced) and how they were obtained."""

    loss_sum: float
    """Summed cross-entropy of the scored targets, in nats (accumulated in float64)."""
    tokens: int
    """Number of scored targets."""
    bytes: int
    """UTF-8 bytes of the scored targets (the BPB denominator)."""
    elapsed_s: float
    """Wall-clock seconds, all-reduce included."""
    mode: str
    """"standard" or "sliding"."""
    stride: int | None
    """Sliding-window stride actually used; None for the standard pass."""
    window: int
    """Sequence length (standard) or window length (sliding)."""

    @property
    def val_loss(self) -> float:
        """Mean nats per token (NaN when nothing was scored, e.g. an idle rank)."""
        return self.loss_sum / self.tokens if self.tokens else math.nan

    @property
    def val_bpb(self) -> float:
        """Bits per byte: loss_sum / (bytes * ln 2) (NaN when no bytes were scored)."""
        return self.loss_sum / (self.bytes * math.log(2.0)) if self.bytes else math.nan


def _require_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_ranks(rank: int, world_size: int) -> None:
    _require_positive("world_size", world_size)
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
    if world_size > 1 and _distributed_ready() and dist.get_world_size() != world_size:
        raise ConfigError(
            f"world_size={world_size} differs from the process group's size {dist.get_world_size()}"
        )


def _distributed_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def _check_tokens(val_tokens: torch.Tensor, luts: ByteLUTs, min_len: int) -> None:
    if val_tokens.dim() != 1 or val_tokens.dtype != torch.int64 or val_tokens.device.type != "cpu":
        raise DataError(
            f"val_tokens must be a 1-D int64 CPU tensor, got {val_tokens.dtype} of shape "
            f"{tuple(val_tokens.shape)} on {val_tokens.device}"
        )
    if val_tokens.numel() < min_len:
        raise DataError(f"val_tokens has {val_tokens.numel()} tokens, need at least {min_len}")
    low, high = (int(v) for v in torch.aminmax(val_tokens))
    if low < 0 or high >= luts.vocab_size:
        raise DataError(
            f"val_tokens holds ids in [{low}, {high}], outside the vocabulary [0, {luts.vocab_size})"
        )


def _shard(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank's contiguous slice [first, last) of ``count`` items (upstream integer split)."""
    return count * rank // world_size, count * (rank + 1) // world_size


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Sums:
    """Device-side float64/int64 accumulators, so batches never wait on the host."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.tokens = torch.zeros((), dtype=torch.int64, device=device)
        self.bytes = torch.zeros((), dtype=torch.int64, device=device)

    def add_batch(
        self,
        forward: Forward,
        x: torch.Tensor,
        y: torch.Tensor,
        scored: torch.Tensor | None,
        luts: ByteLUTs,
        autocast_dtype: torch.dtype | None,
    ) -> None:
        """Score targets ``y`` after inputs ``x``; ``scored`` masks the counted positions."""
        logits = _logits(forward, x, luts.vocab_size, autocast_dtype)
        # Float64 logits stay float64 (exact references in tests); anything lower is
        # upcast so bf16 models are scored in float32 as upstream does.
        if logits.dtype != torch.float64:
            logits = logits.float()
        nll = F.cross_entropy(logits.reshape(-1, luts.vocab_size), y.reshape(-1), reduction="none").view_as(y)
        nbytes = count_bytes(luts, x, y)
        if scored is None:
            self.loss += nll.sum(dtype=torch.float64)
            self.tokens += y.numel()
            self.bytes += nbytes.sum(dtype=torch.int64)
            return
        # torch.where keeps shapes static: boolean indexing would sync with the host.
        self.loss += torch.where(scored, nll.double(), 0.0).sum()
        self.tokens += scored.sum(dtype=torch.int64)
        self.bytes += torch.where(scored, nbytes, 0).sum(dtype=torch.int64)

    def all_reduce(self, world_size: int) -> None:
        """Sum over ranks (as float64, upstream's choice) when a process group is running."""
        if world_size <= 1 or not _distributed_ready():
            return
        packed = torch.stack([self.loss, self.tokens.double(), self.bytes.double()])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        self.loss = packed[0]
        self.tokens = packed[1].round().to(torch.int64)
        self.bytes = packed[2].round().to(torch.int64)


def _logits(
    forward: Forward, x: torch.Tensor, vocab_size: int, autocast_dtype: torch.dtype | None
) -> torch.Tensor:
    context = (
        torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with context:
        logits = forward(x)
    expected = (*x.shape, vocab_size)
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"model forward returned logits of shape {tuple(logits.shape)}, expected {expected} "
            f"(batch, length, vocab_size of the tokenizer)"
        )
    return logits


def evaluate_standard(
    forward: Forward,
    val_tokens: torch.Tensor,
    luts: ByteLUTs,
    *,
    seq_len: int,
    batch_seqs: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: Progress | None = None,
) -> EvalResult:
    """Score non-overlapping ``seq_len`` sequences, each starting with no context.

    ``val_tokens`` (1-D int64, CPU) must hold k * seq_len + 1 tokens (k >= 1): the caller
    truncates the stream as upstream does. ``progress(done, total)`` counts this rank's
    sequences.
    """
    _require_positive("seq_len", seq_len)
    _require_positive("batch_seqs", batch_seqs)
    _check_ranks(rank, world_size)
    _check_tokens(val_tokens, luts, seq_len + 1)
    if (val_tokens.numel() - 1) % seq_len:
        raise DataError(
            f"val_tokens has {val_tokens.numel()} tokens; the standard evaluation needs "
            f"k * seq_len + 1 with seq_len={seq_len} (truncate the stream first)"
        )
    device = torch.device(device)
    luts = luts.to(device)
    first, last = _shard((val_tokens.numel() - 1) // seq_len, rank, world_size)
    _synchronize(device)
    start_time = time.perf_counter()
    sums = _Sums(device)
    with torch.no_grad():
        for seq in range(first, last, batch_seqs):
            seq_end = min(seq + batch_seqs, last)
            chunk = val_tokens[seq * seq_len : seq_end * seq_len + 1].to(device, non_blocking=True)
            x = chunk[:-1].view(-1, seq_len)
            y = chunk[1:].view(-1, seq_len)
            sums.add_batch(forward, x, y, None, luts, autocast_dtype)
            if progress is not None:
                progress(seq_end - first, last - first)
    return _finish(sums, world_size, device, start_time, "standard", None, seq_len)


def sliding_windows(total_targets: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows ``(start, end, score_from)`` over input positions [0, total_targets).

    Input position p predicts target p (targets are tokens[1:], inputs tokens[:-1]). A window
    reads inputs [start, end) and scores its local positions [score_from, end - start):
    all of them for the first window, otherwise the ones after the first window - stride
    (the context). Windows start at 0, stride, 2*stride, ... while they still reach an
    unscored target, so targets are scored exactly once, each with at least window - stride
    tokens of context after the first window. A stride >= window is treated as stride ==
    window (non-overlapping windows, the standard evaluation).
    """
    _require_positive("window", window)
    _require_positive("stride", stride)
    if not isinstance(total_targets, int) or total_targets < 0:
        raise ConfigError(f"total_targets must be a non-negative integer, got {total_targets!r}")
    if total_targets == 0:
        return []
    stride = min(stride, window)
    context = window - stride
    windows = [(0, min(window, total_targets), 0)]
    for start in range(stride, total_targets - context, stride):
        windows.append((start, min(start + window, total_targets), context))
    return windows


def _window_batch(
    chunk: torch.Tensor, batch: list[tuple[int, int, int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-zero-padded inputs, targets and the scored mask of consecutive windows.

    ``chunk`` is tokens[batch[0].start : batch[-1].end + 1] on ``device``.
    """
    base = batch[0][0]
    width = max(end - start for start, end, _ in batch)
    meta = torch.tensor(
        [(start - base, end - start, score_from) for start, end, score_from in batch],
        dtype=torch.int64,
    ).to(device, non_blocking=True)
    offset, length, score_from = meta[:, 0:1], meta[:, 1:2], meta[:, 2:3]
    pos = torch.arange(width, device=device).unsqueeze(0)
    valid = pos < length
    index = torch.where(valid, offset + pos, 0)  # padding reads a harmless in-range token
    x = torch.where(valid, chunk[index], 0)
    y = torch.where(valid, chunk[index + 1], 0)
    return x, y, valid & (pos >= score_from)


def evaluate_sliding(
    forward: Forward,
    val_tokens: torch.Tensor,
    luts: ByteLUTs,
    *,
    window: int,
    stride: int,
    batch_seqs: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: Progress | None = None,
) -> EvalResult:
    """Score every target of ``val_tokens`` once with overlapping windows (`sliding_windows`).

    ``batch_seqs`` windows go through one forward, right-padded with zeros to the longest;
    padding is never scored. With stride >= window the numbers equal `evaluate_standard`'s
    at seq_len = window. ``progress(done, total)`` counts this rank's windows.
    """
    _require_positive("batch_seqs", batch_seqs)
    _check_ranks(rank, world_size)
    _check_tokens(val_tokens, luts, 2)
    windows = sliding_windows(val_tokens.numel() - 1, window, stride)
    first, last = _shard(len(windows), rank, world_size)
    mine = windows[first:last]
    device = torch.device(device)
    luts = luts.to(device)
    _synchronize(device)
    start_time = time.perf_counter()
    sums = _Sums(device)
    with torch.no_grad():
        for i in range(0, len(mine), batch_seqs):
            batch = mine[i : i + batch_seqs]
            # Window ends never decrease, so the last window reaches furthest.
            chunk = val_tokens[batch[0][0] : batch[-1][1] + 1].to(device, non_blocking=True)
            x, y, scored = _window_batch(chunk, batch, device)
            sums.add_batch(forward, x, y, scored, luts, autocast_dtype)
            if progress is not None:
                progress(i + len(batch), len(mine))
    return _finish(sums, world_size, device, start_time, "sliding", min(stride, window), window)


def _finish(
    sums: _Sums,
    world_size: int,
    device: torch.device,
    start_time: float,
    mode: str,
    stride: int | None,
    window: int,
) -> EvalResult:
    sums.all_reduce(world_size)
    _synchronize(device)
    elapsed = time.perf_counter() - start_time
    return EvalResult(
        loss_sum=float(sums.loss.item()),
        tokens=int(sums.tokens.item()),
        bytes=int(sums.bytes.item()),
        elapsed_s=elapsed,
        mode=mode,
        stride=stride,
        window=window,
    )
