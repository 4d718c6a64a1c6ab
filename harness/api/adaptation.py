"""What an ``adapter`` plugin is handed during score-first test-time training (TTT).

The harness walks the validation stream chunk by chunk (`harness.pipeline.adaptation`): it
scores a chunk with the current weights under ``torch.no_grad``, commits the score, and only
then calls the adapter with a `ScoredChunk`, a private copy of tokens that are all scored
already. The adapter sees nothing else of the validation data: no loader, no stream, no run
context, and never the scores. The rule is upstream's "legal TTT" (PR #549, PR #1413 and the
2026-04-09 SP8192 record; issue #1017 conditions: causal, normalized, score before update,
each token scored once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScoredChunk:
    """Tokens of the validation stream whose targets the harness has already scored."""

    tokens: torch.Tensor
    """1-D int64 CPU tensor owning its storage (a copy, never a view of the stream):
    stream positions ``[start, start + len(tokens))``. Its first token is the input of the
    first newly scored target (the last target of the previous chunk, or the stream's first
    token); every later token was a scored target."""
    start: int
    """Stream position of ``tokens[0]``."""
    index: int
    """Chunk number, 0-based, in the walk's order."""
    count: int
    """Chunks in the whole walk (upstream's ``ceil(targets / chunk_tokens)``, empty ones
    included); the last chunk scored is never handed over, since nothing is left to score."""


@dataclass(frozen=True)
class AdaptSession:
    """Where the adaptation runs; the same on every call of one evaluation."""

    rank: int
    world_size: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    """The dtype the scoring passes autocast to (None: no autocast)."""
    window: int
    """The sliding-window length the harness scores with (a natural training length)."""
    sum_across_ranks: Callable[[Sequence[torch.Tensor]], None]
    """Sums each tensor in place over all ranks (gradients of data-parallel adaptation); does
    nothing on one rank. Every rank must call it the same number of times."""
