"""Score-first test-time training (TTT): the harness walks the validation stream, the adapter
plugin only learns from what is already scored.

The walk follows the upstream "legal TTT" evaluation of the 2026-04-09 SP8192 record
(``eval_val_ttt``; PR #549, PR #1413; docs/protocol.md): the sliding windows of
`harness.pipeline.eval.sliding_windows` are grouped into chunks of ``chunk_tokens`` targets,
a window belonging to the chunk of its first scored position (the last chunk takes any
overflow). For each chunk, in order:

1. its windows are scored with the current weights (`evaluate_windows`: ``torch.no_grad``,
   eval mode, a normalized softmax over the whole vocabulary, split across ranks as upstream
   splits them) and the sums are committed to a ledger that refuses a second commit;
2. then, unless nothing is left to score, the adapter gets a `ScoredChunk`: a fresh copy of the
   stream from the input of the chunk's first target to its last scored target, nothing
   beyond. It never receives the stream, the loader, the run context or the scores.

Every target is scored exactly once, by the weights adapted on the chunks before its own. The
adapter's time (device-synchronized) is reported apart as ``ttt_time_ms`` and counts toward
the evaluation cap: the cap is checked before every scoring batch. Forward hooks (which would
let an adapter watch the inputs of the scoring passes) are refused after every adapter call.
`score_ttt` is the scoring phase's TTT pass with its log lines (upstream's ``quantized_ttt``
line is ``final_<quant>_<codec>_roundtrip_ttt`` here). This module is reached by name only
when ``eval.adapter`` is set, so bundles without TTT do not carry it
(`harness.pipeline.setup.modules_reached_by_name`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harness.api.adaptation import AdaptSession, ScoredChunk
from harness.api.errors import ConfigError, EvalTimeLimit
from harness.api.protocols import Adapter
from harness.pipeline.bpb import ByteLUTs
from harness.pipeline.eval import (
    EvalResult,
    check_tokens,
    distributed_ready,
    evaluate_windows,
    require_positive,
    scoring_split,
    sliding_windows,
)
from harness.pipeline.scorer import Scorer, log_score
from harness.pipeline.setup import RunState

Window = tuple[int, int, int]


def chunk_windows(windows: Sequence[Window], chunk_tokens: int, total_targets: int) -> list[list[Window]]:
    """Windows grouped by chunk, upstream's rule: ``ceil(total_targets / chunk_tokens)``
    chunks; a window goes to chunk ``min((start + score_from) // chunk_tokens, count - 1)``.
    Groups may be empty (windows or strides longer than a chunk)."""
    require_positive("chunk_tokens", chunk_tokens)
    count = -(-total_targets // chunk_tokens)
    groups: list[list[Window]] = [[] for _ in range(count)]
    for start, end, score_from in windows:
        groups[min((start + score_from) // chunk_tokens, count - 1)].append((start, end, score_from))
    return groups


@dataclass(frozen=True)
class ChunkScore:
    """One committed chunk: what it scored and the sums over all ranks."""

    index: int
    first_target: int
    """Stream position of the chunk's first scored target token."""
    last_target: int
    """Stream position of its last scored target token."""
    loss_sum: float
    tokens: int
    bytes: int


class ScoreLedger:
    """Committed chunk scores, in walk order; a chunk is committed once and never changed."""

    def __init__(self) -> None:
        self._chunks: list[ChunkScore] = []

    def commit(self, score: ChunkScore) -> None:
        """Append ``score``; a chunk committed twice, out of order or overlapping is refused."""
        if self._chunks:
            before = self._chunks[-1]
            if score.index <= before.index or score.first_target != before.last_target + 1:
                raise ConfigError(
                    f"chunk {score.index} (targets {score.first_target}..{score.last_target}) cannot follow "
                    f"chunk {before.index} (targets ..{before.last_target}): a target is scored exactly once"
                )
        self._chunks.append(score)

    @property
    def chunks(self) -> tuple[ChunkScore, ...]:
        return tuple(self._chunks)


@dataclass(frozen=True)
class AdaptiveResult:
    """The TTT score (all ranks) and how it was obtained."""

    result: EvalResult
    """Sums over every committed chunk; ``mode`` is "ttt"."""
    adapt_s: float
    """Seconds spent in the adapter (start and every adapt call), device-synchronized."""
    chunks: tuple[ChunkScore, ...]
    count: int
    """Chunks of the walk (upstream's count, empty ones included)."""


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sum_across_ranks(world_size: int) -> Callable[[Sequence[torch.Tensor]], None]:
    def run(tensors: Sequence[torch.Tensor]) -> None:
        if world_size <= 1 or not distributed_ready():
            return
        by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for t in tensors:
            by_kind.setdefault((t.dtype, t.device), []).append(t)
        for group in by_kind.values():  # one collective per dtype: far fewer launches than per tensor
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    return run


def _hooks(model: nn.Module) -> set[tuple[str, str, int]]:
    """Every forward hook that could see the inputs of a scoring pass: the model's modules'
    and the global ones (torch keeps those in module-level dicts of ``torch.nn.modules.module``)."""
    found = {
        (name or "<model>", kind, key)
        for name, module in model.named_modules()
        for kind, table in (("forward", module._forward_hooks), ("forward_pre", module._forward_pre_hooks))
        for key in table
    }
    glob = torch.nn.modules.module
    for kind, table in (
        ("global forward", glob._global_forward_hooks),
        ("global forward_pre", glob._global_forward_pre_hooks),
    ):
        found.update(("torch.nn", kind, key) for key in table)
    return found


def _refuse_new_hooks(model: nn.Module, before: set[tuple[str, str, int]], adapter: Adapter) -> None:
    added = sorted(_hooks(model) - before)
    if added:
        where = ", ".join(f"{kind} hook on {name}" for name, kind, _ in added)
        name = getattr(adapter, "name", type(adapter).__name__)
        raise ConfigError(
            f"adapter {name} registered {where}: a hook would see "
            "the inputs of the scoring passes, which hold tokens not yet scored; an adapter may change "
            "weights only"
        )


def _scored_chunk(
    val_tokens: torch.Tensor, first: int, last_target: int, index: int, count: int
) -> ScoredChunk:
    # clone(): a view would keep the whole stream reachable through its storage.
    tokens = val_tokens[first : last_target + 1].clone()
    return ScoredChunk(tokens=tokens, start=first, index=index, count=count)


def evaluate_adaptive(
    model: nn.Module,
    adapter: Adapter,
    val_tokens: torch.Tensor,
    luts: ByteLUTs,
    *,
    window: int,
    stride: int,
    chunk_tokens: int,
    batch_seqs: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
    deadline: float | None = None,
    compile_model: bool = False,
) -> AdaptiveResult:
    """Score ``val_tokens`` with the score-first walk (module docstring), adapting ``model``
    in place through ``adapter``. Past ``deadline`` (a ``time.perf_counter()`` value) it stops
    before the next scoring batch and raises `EvalTimeLimit` naming the chunk."""
    check_tokens(val_tokens, luts, 2)
    device = torch.device(device)
    total = val_tokens.numel() - 1
    groups = chunk_windows(sliding_windows(total, window, stride), chunk_tokens, total)
    session = AdaptSession(
        rank=rank,
        world_size=world_size,
        device=device,
        autocast_dtype=autocast_dtype,
        window=window,
        sum_across_ranks=_sum_across_ranks(world_size),
    )
    hooks = _hooks(model)
    split = scoring_split(model, compile_model, device)  # compiled once for every chunk
    ledger = ScoreLedger()
    start_time = time.perf_counter()
    _synchronize(device)
    t0 = time.perf_counter()
    adapter.start(model, session)
    _synchronize(device)
    adapt_s = time.perf_counter() - t0
    _refuse_new_hooks(model, hooks, adapter)
    first_input = 0
    last_index = max(i for i, group in enumerate(groups) if group)
    for index, group in enumerate(groups):
        if not group:
            continue
        model.eval()
        try:
            scored = evaluate_windows(
                model,
                val_tokens,
                luts,
                group,
                window=window,
                stride=stride,
                batch_seqs=batch_seqs,
                device=device,
                autocast_dtype=autocast_dtype,
                rank=rank,
                world_size=world_size,
                deadline=deadline,
                compile_model=compile_model,
                split=split,
            )
        except EvalTimeLimit as exc:
            raise EvalTimeLimit(f"score-first TTT stopped at chunk {index} of {len(groups)}: {exc}") from None
        last_target = group[-1][1]
        first_target = group[0][0] + group[0][2] + 1
        ledger.commit(
            ChunkScore(index, first_target, last_target, scored.loss_sum, scored.tokens, scored.bytes)
        )
        if index == last_index:
            break  # nothing is left to score: training on the last chunk would only cost time
        chunk = _scored_chunk(val_tokens, first_input, last_target, index, len(groups))
        first_input = last_target
        model.train()
        _synchronize(device)
        t0 = time.perf_counter()
        with torch.enable_grad():
            adapter.adapt(chunk)
        _synchronize(device)
        adapt_s += time.perf_counter() - t0
        _refuse_new_hooks(model, hooks, adapter)
    model.eval()
    chunks = ledger.chunks
    result = EvalResult(
        loss_sum=math.fsum(c.loss_sum for c in chunks),
        tokens=sum(c.tokens for c in chunks),
        bytes=sum(c.bytes for c in chunks),
        elapsed_s=time.perf_counter() - start_time,
        mode="ttt",
        stride=min(stride, window),
        window=window,
    )
    return AdaptiveResult(result=result, adapt_s=adapt_s, chunks=chunks, count=len(groups))


def score_ttt(run: RunState, scorer: Scorer, model: nn.Module, deadline: float, tag: str) -> dict[str, Any]:
    """Phase 4's TTT pass (`harness.pipeline.scoring`): the walk on the artifact's model, which
    it adapts in place (nothing scores that model after it), and its log lines. Returns the
    ``scores`` entries ``ttt`` and ``ttt_time_ms``; `EvalTimeLimit` passes through."""
    config, log, ev = run.config, run.log, run.config.eval
    name = run.manager.registry.name_of(ev.adapter)
    stride, window, chunk = ev.eval_stride, scorer.window(), ev.ttt_chunk_tokens
    settings = " ".join(f"{f.name}:{getattr(ev.adapter, f.name)}" for f in fields(ev.adapter))
    log.log(f"ttt:start adapter:{name} chunk_tokens:{chunk} {settings}", event="ttt_start", adapter=name)
    t0 = time.perf_counter()
    out = evaluate_adaptive(
        model,
        ev.adapter.build(),
        scorer.val,
        scorer.luts,
        window=window,
        stride=stride,
        chunk_tokens=chunk,
        batch_seqs=scorer.sliding_batch_seqs(),
        device=run.dist.device,
        autocast_dtype=run.autocast,
        rank=run.dist.rank,
        world_size=run.dist.world_size,
        deadline=deadline,
        compile_model=config.train.compile,
    )
    ms, ttt_ms, res = 1000.0 * (time.perf_counter() - t0), 1000.0 * out.adapt_s, out.result
    head = f"stride:{stride} window:{window} chunk_tokens:{chunk} chunks:{out.count}"
    timing = f"eval_time:{ms:.0f}ms ttt_time:{ttt_ms:.0f}ms"
    extra = {"eval_time_ms": ms, "ttt_time_ms": ttt_ms, "adapter": name, "chunks": out.count}
    log_score(log, f"{tag}_ttt", head, res, timing, "ttt", **extra)
    return {"ttt": res, "ttt_time_ms": ttt_ms}
