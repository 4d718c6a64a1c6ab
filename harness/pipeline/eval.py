"""The harness's two scoring passes: standard (non-overlapping) and sliding-window evaluation.

Both follow upstream parameter-golf `train_gpt.py` (docs/protocol.md §2 and §3.1-3.3):
per-token natural-log cross-entropy summed in float64, bytes from the tokenizer tables of
`harness.pipeline.bpb`, contiguous work split across ranks and an all-reduce (SUM) of the three
sums. The sliding window is the "fixed" variant of the 2026-04-01+ records: context =
window - stride, windows only while they still have targets to score, so every target is
scored exactly once (the older variants re-scored the tail).

The model only supplies logits; the loss is computed here so no plugin can change how it is
scored. Bump `EVAL_VERSION` whenever a number produced here could change.

`evaluate_sliding` is the fast path (pgolf issue 6): when the model exposes ``hidden`` and
``logits`` (the `LanguageModel` protocol), the LM head, the cross-entropy and the byte count
run only on the positions a window scores (the last ``stride`` of every window after the
first), not on its ``window - stride`` positions of context; on CUDA the hidden forward can be
compiled with static shapes (the tail batch is padded). `evaluate_sliding_reference` is the
plain implementation (head and loss everywhere, then a mask); both give the same sums. Both
passes take an optional ``deadline`` (a ``time.perf_counter()`` value) checked between
batches (pgolf issue 7): past it they raise `EvalTimeLimit`, all ranks at the same batch.

Longer than 400 lines because it is the scoring rule itself: standard and sliding-window
passes, the fast sliding path and its plain reference, the precision and rank-split rules;
keeping them in one module makes it the single place a reviewer reads to trust a score.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.api.errors import ConfigError, DataError, EvalTimeLimit
from harness.pipeline.bpb import ByteLUTs, count_bytes

EVAL_VERSION = 1

Forward = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]
HeadSplit = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


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
    """"standard", "sliding" or "ttt" (the score-first TTT walk, `harness.pipeline.adaptation`)."""
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


def require_positive(name: str, value: int) -> None:
    """ConfigError naming ``name`` unless ``value`` is an integer >= 1."""
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_ranks(rank: int, world_size: int) -> None:
    """ConfigError unless ``0 <= rank < world_size``."""
    require_positive("world_size", world_size)
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
    if world_size > 1 and distributed_ready() and dist.get_world_size() != world_size:
        raise ConfigError(
            f"world_size={world_size} differs from the process group's size {dist.get_world_size()}"
        )


def distributed_ready() -> bool:
    """True when a process group is up (the passes then all-reduce their sums)."""
    return dist.is_available() and dist.is_initialized()


def check_tokens(val_tokens: torch.Tensor, luts: ByteLUTs, min_len: int) -> None:
    """DataError unless ``val_tokens`` is a 1-D int64 CPU tensor of at least ``min_len`` ids,
    all inside the vocabulary of ``luts``."""
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


def rank_slice(count: int, rank: int, world_size: int) -> tuple[int, int]:
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
        logits = scoring_precision(_logits(forward, x, luts.vocab_size, autocast_dtype))
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

    def add_scored(
        self,
        forward: Forward,
        split: HeadSplit | None,
        x: torch.Tensor,
        y: torch.Tensor,
        scored: torch.Tensor,
        luts: ByteLUTs,
        autocast_dtype: torch.dtype | None,
    ) -> None:
        """Score only the flat positions ``scored`` of the (B, T) batch ``x`` -> ``y``.

        With ``split = (hidden, head)`` the head runs on the scored hidden states alone;
        without it the full forward runs and its logits are gathered.
        """
        logits = scoring_precision(_scored_logits(forward, split, x, scored, luts.vocab_size, autocast_dtype))
        targets = y.reshape(-1).index_select(0, scored)
        nll = F.cross_entropy(logits, targets, reduction="none")
        self.loss += nll.sum(dtype=torch.float64)
        self.tokens += scored.numel()  # known on the host: no sync
        self.bytes += count_bytes(luts, x.reshape(-1).index_select(0, scored), targets).sum(dtype=torch.int64)

    def all_reduce(self, world_size: int) -> None:
        """Sum over ranks (as float64, upstream's choice) when a process group is running."""
        if world_size <= 1 or not distributed_ready():
            return
        packed = torch.stack([self.loss, self.tokens.double(), self.bytes.double()])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        self.loss = packed[0]
        self.tokens = packed[1].round().to(torch.int64)
        self.bytes = packed[2].round().to(torch.int64)


def _logits(
    forward: Forward, x: torch.Tensor, vocab_size: int, autocast_dtype: torch.dtype | None
) -> torch.Tensor:
    with autocast_context(x.device, autocast_dtype):
        logits = forward(x)
    expected = (*x.shape, vocab_size)
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"model forward returned logits of shape {tuple(logits.shape)}, expected {expected} "
            f"(batch, length, vocab_size of the tokenizer)"
        )
    return logits


def scoring_precision(logits: torch.Tensor) -> torch.Tensor:
    """Logits in the precision the loss is computed in: float64 stays float64 (exact
    references in tests); anything lower is upcast so bf16 models are scored in float32,
    as upstream does. Every pass that reports a cross-entropy uses this one rule."""
    return logits if logits.dtype == torch.float64 else logits.float()


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _scored_logits(
    forward: Forward,
    split: HeadSplit | None,
    x: torch.Tensor,
    scored: torch.Tensor,
    vocab_size: int,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """(N, V) logits of the N flat positions ``scored`` of the (B, T) inputs ``x``."""
    if split is None:
        return _logits(forward, x, vocab_size, autocast_dtype).reshape(-1, vocab_size).index_select(0, scored)
    hidden, head = split
    with autocast_context(x.device, autocast_dtype):
        states = hidden(x)
        if states.dim() != 3 or tuple(states.shape[:2]) != tuple(x.shape):
            raise ConfigError(
                f"model hidden() returned shape {tuple(states.shape)}, "
                f"expected ({x.shape[0]}, {x.shape[1]}, d) "
                f"(batch, length, model width)"
            )
        logits = head(states.reshape(-1, states.shape[-1]).index_select(0, scored))
    expected = (scored.numel(), vocab_size)
    if tuple(logits.shape) != expected:
        raise ConfigError(
            f"model logits() returned shape {tuple(logits.shape)}, expected {expected} "
            f"(scored positions, vocab_size of the tokenizer)"
        )
    return logits


def head_split(model: object) -> HeadSplit | None:
    """``(model.hidden, model.logits)`` when the model offers both (the `LanguageModel`
    protocol), else None: such models are scored from their full forward."""
    hidden, head = getattr(model, "hidden", None), getattr(model, "logits", None)
    return (hidden, head) if callable(hidden) and callable(head) else None


def scoring_split(forward: Forward, compile_model: bool, device: torch.device) -> HeadSplit | None:
    """`head_split` of ``forward``, its hidden forward compiled when the sliding pass pads to
    static shapes (``compile_model`` on CUDA)."""
    split = head_split(forward)
    if _static_shapes(compile_model, device, split):
        split = (_maybe_compile(split[0], True, device), split[1])
    return split


def _maybe_compile(fn: Callable, compile_model: bool, device: torch.device) -> Callable:
    # Static shapes: every batch is padded to the same (rows, width), so one graph serves all.
    if compile_model and device.type == "cuda":
        return torch.compile(fn, dynamic=False)
    return fn


def _static_shapes(compile_model: bool, device: torch.device, split: HeadSplit | None) -> bool:
    """Whether the sliding batches are padded to one fixed shape (for the compiled hidden)."""
    return compile_model and device.type == "cuda" and split is not None


def _batch_counts(count: int, batch_seqs: int, world_size: int) -> list[int]:
    """Number of batches of every rank when ``count`` items are sharded (`rank_slice`)."""
    shards = (rank_slice(count, r, world_size) for r in range(world_size))
    return [-(-(last - first) // batch_seqs) for first, last in shards]


class _Deadline:
    """Checks the deadline before every batch; several ranks agree with an all-reduce MAX.

    A multi-rank run with a deadline loops over the largest rank's batch count (idle rounds
    on the others), so every rank makes the same collectives and all stop at the same batch.
    """

    def __init__(
        self,
        name: str,
        deadline: float | None,
        device: torch.device,
        rank: int,
        world_size: int,
        counts: list[int],
        targets_total: int,
    ) -> None:
        self.name, self.deadline, self.device, self.rank = name, deadline, device, rank
        self.collective = deadline is not None and world_size > 1 and distributed_ready()
        self.mine = counts[rank]
        self.rounds = max(counts) if self.collective else self.mine
        self.targets_total, self.targets_done = targets_total, 0
        self.start = time.perf_counter()

    def batches(self) -> Iterator[int]:
        """This rank's batch indices 0, 1, ...; raises `EvalTimeLimit` once past the deadline."""
        for b in range(self.rounds):
            self._check(min(b, self.mine))
            if b < self.mine:
                yield b

    def _check(self, done: int) -> None:
        if self.deadline is None:
            return
        now = time.perf_counter()
        over = now > self.deadline
        if self.collective:
            flag = torch.tensor(float(over), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item() > 0)
        if over:
            raise EvalTimeLimit(self._message(done, now))

    def _message(self, done: int, now: float) -> str:
        allowed = self.deadline - self.start
        cap = (
            f"it had {allowed:.3f}s left before the deadline and ran {now - self.start:.3f}s"
            if allowed >= 0
            else f"the deadline had passed {-allowed:.3f}s before it started"
        )
        agreed = " (the ranks agree on the earliest)" if self.collective else ""
        return (
            f"{self.name} evaluation stopped at its time cap after {done} of {self.mine} batches "
            f"({self.targets_done} of {self.targets_total} targets on rank {self.rank}): {cap}{agreed}"
        )


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
    deadline: float | None = None,
) -> EvalResult:
    """Score non-overlapping ``seq_len`` sequences, each starting with no context.

    ``val_tokens`` (1-D int64, CPU) must hold k * seq_len + 1 tokens (k >= 1): the caller
    truncates the stream as upstream does. ``progress(done, total)`` counts this rank's
    sequences. Past ``deadline`` (a ``time.perf_counter()`` value) it stops between batches
    and raises `EvalTimeLimit`.
    """
    require_positive("seq_len", seq_len)
    require_positive("batch_seqs", batch_seqs)
    check_ranks(rank, world_size)
    check_tokens(val_tokens, luts, seq_len + 1)
    if (val_tokens.numel() - 1) % seq_len:
        raise DataError(
            f"val_tokens has {val_tokens.numel()} tokens; the standard evaluation needs "
            f"k * seq_len + 1 with seq_len={seq_len} (truncate the stream first)"
        )
    device = torch.device(device)
    luts = luts.to(device)
    count = (val_tokens.numel() - 1) // seq_len
    first, last = rank_slice(count, rank, world_size)
    _synchronize(device)
    start_time = time.perf_counter()
    sums = _Sums(device)
    guard = _Deadline(
        "standard",
        deadline,
        device,
        rank,
        world_size,
        _batch_counts(count, batch_seqs, world_size),
        (last - first) * seq_len,
    )
    with torch.no_grad():
        for b in guard.batches():
            seq = first + b * batch_seqs
            seq_end = min(seq + batch_seqs, last)
            chunk = val_tokens[seq * seq_len : seq_end * seq_len + 1].to(device, non_blocking=True)
            x = chunk[:-1].view(-1, seq_len)
            y = chunk[1:].view(-1, seq_len)
            sums.add_batch(forward, x, y, None, luts, autocast_dtype)
            guard.targets_done += y.numel()
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
    require_positive("window", window)
    require_positive("stride", stride)
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


def _sliding_setup(
    val_tokens: torch.Tensor,
    luts: ByteLUTs,
    window: int,
    stride: int,
    batch_seqs: int,
    rank: int,
    world_size: int,
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """All windows and this rank's windows, inputs checked."""
    require_positive("batch_seqs", batch_seqs)
    check_ranks(rank, world_size)
    check_tokens(val_tokens, luts, 2)
    windows = sliding_windows(val_tokens.numel() - 1, window, stride)
    first, last = rank_slice(len(windows), rank, world_size)
    return windows, windows[first:last]


def _scored_targets(batch: list[tuple[int, int, int]]) -> int:
    return sum(end - start - score_from for start, end, score_from in batch)


def evaluate_sliding_reference(
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
    deadline: float | None = None,
    compile_model: bool = False,
) -> EvalResult:
    """The plain sliding-window evaluation: same arguments and sums as `evaluate_sliding`.

    Every window's full logits and loss are computed and the context positions masked out;
    it is kept as the reference the fast path is tested and benchmarked against.
    ``compile_model`` compiles the whole forward on CUDA (shapes vary at the tail).
    """
    windows, mine = _sliding_setup(val_tokens, luts, window, stride, batch_seqs, rank, world_size)
    device = torch.device(device)
    luts = luts.to(device)
    forward = _maybe_compile(forward, compile_model, device)
    _synchronize(device)
    start_time = time.perf_counter()
    sums = _Sums(device)
    guard = _Deadline(
        "sliding",
        deadline,
        device,
        rank,
        world_size,
        _batch_counts(len(windows), batch_seqs, world_size),
        _scored_targets(mine),
    )
    with torch.no_grad():
        for b in guard.batches():
            batch = mine[b * batch_seqs : (b + 1) * batch_seqs]
            # Window ends never decrease, so the last window reaches furthest.
            chunk = val_tokens[batch[0][0] : batch[-1][1] + 1].to(device, non_blocking=True)
            x, y, scored = _window_batch(chunk, batch, device)
            sums.add_batch(forward, x, y, scored, luts, autocast_dtype)
            guard.targets_done += _scored_targets(batch)
            if progress is not None:
                progress(b * batch_seqs + len(batch), len(mine))
    return _finish(sums, world_size, device, start_time, "sliding", min(stride, window), window)


def _scored_batch(
    chunk: torch.Tensor, batch: list[tuple[int, int, int]], device: torch.device, rows: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs and targets of ``batch`` as (rows, width), zero-padded right and below, and the
    flat indices of their scored positions, ascending.

    ``chunk`` is tokens[batch[0].start : batch[-1].end + 1] on ``device``. The index is built
    on the host, where the window layout is known, so its length never needs a device sync.
    """
    base = batch[0][0]
    meta = torch.zeros((rows, 3), dtype=torch.int64)  # padding rows: length 0, nothing scored
    meta[: len(batch)] = torch.tensor(
        [(start - base, end - start, score_from) for start, end, score_from in batch]
    )
    pos = torch.arange(width).unsqueeze(0)
    valid = pos < meta[:, 1:2]
    scored = (valid & (pos >= meta[:, 2:3])).flatten().nonzero().squeeze(1)
    index = torch.where(valid, meta[:, 0:1] + pos, 0).to(device, non_blocking=True)
    valid = valid.to(device, non_blocking=True)
    x = torch.where(valid, chunk[index], 0)
    y = torch.where(valid, chunk[index + 1], 0)
    return x, y, scored.to(device, non_blocking=True)


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
    deadline: float | None = None,
    compile_model: bool = False,
) -> EvalResult:
    """Score every target of ``val_tokens`` once with overlapping windows (`sliding_windows`).

    ``batch_seqs`` windows go through one forward, right-padded with zeros to the longest;
    padding is never scored. With stride >= window the numbers equal `evaluate_standard`'s
    at seq_len = window. ``progress(done, total)`` counts this rank's windows.

    Fast path: a model with ``hidden``/``logits`` gets its head and loss evaluated on the
    scored positions only (same sums as `evaluate_sliding_reference`); other callables are
    run whole and their logits gathered. ``compile_model`` compiles ``hidden`` on CUDA and
    pads every batch to ``batch_seqs`` x ``window`` so its shape never changes. Past
    ``deadline`` (a ``time.perf_counter()`` value) it stops between batches and raises
    `EvalTimeLimit`.
    """
    # evaluate_windows checks batch_seqs and the ranks and takes this rank's share itself.
    check_tokens(val_tokens, luts, 2)
    return evaluate_windows(
        forward,
        val_tokens,
        luts,
        sliding_windows(val_tokens.numel() - 1, window, stride),
        window=window,
        stride=stride,
        batch_seqs=batch_seqs,
        device=device,
        autocast_dtype=autocast_dtype,
        rank=rank,
        world_size=world_size,
        progress=progress,
        deadline=deadline,
        compile_model=compile_model,
    )


def evaluate_windows(
    forward: Forward,
    val_tokens: torch.Tensor,
    luts: ByteLUTs,
    windows: list[tuple[int, int, int]],
    *,
    window: int,
    stride: int,
    batch_seqs: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: Progress | None = None,
    deadline: float | None = None,
    compile_model: bool = False,
    split: HeadSplit | None = None,
) -> EvalResult:
    """`evaluate_sliding` on the given ``windows`` only, a consecutive run of
    `sliding_windows`'s (one chunk of the score-first TTT walk), split across ranks as the
    whole list would be. The tokens are not checked again: the caller checked them once.
    ``split``: the model's `scoring_split`, prepared once by a caller that scores many chunks
    (so the hidden forward is compiled once, not once per call).
    """
    require_positive("batch_seqs", batch_seqs)
    check_ranks(rank, world_size)
    first, last = rank_slice(len(windows), rank, world_size)
    mine = windows[first:last]
    device = torch.device(device)
    luts = luts.to(device)
    split = split or scoring_split(forward, compile_model, device)
    static = _static_shapes(compile_model, device, split)
    _synchronize(device)
    start_time = time.perf_counter()
    sums = _Sums(device)
    guard = _Deadline(
        "sliding",
        deadline,
        device,
        rank,
        world_size,
        _batch_counts(len(windows), batch_seqs, world_size),
        _scored_targets(mine),
    )
    with torch.no_grad():
        for b in guard.batches():
            batch = mine[b * batch_seqs : (b + 1) * batch_seqs]
            chunk = val_tokens[batch[0][0] : batch[-1][1] + 1].to(device, non_blocking=True)
            rows, width = (
                (min(batch_seqs, len(mine)), window)
                if static
                else (len(batch), max(e - s for s, e, _ in batch))
            )
            x, y, scored = _scored_batch(chunk, batch, device, rows, width)
            sums.add_scored(forward, split, x, y, scored, luts, autocast_dtype)
            guard.targets_done += _scored_targets(batch)
            if progress is not None:
                progress(b * batch_seqs + len(batch), len(mine))
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
