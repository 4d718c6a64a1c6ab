"""Honest baselines for every run: the model's cross-entropy next to three reference numbers.

All four numbers are mean cross-entropies in nats per token (true natural logarithm,
`math.log` / `torch.log`), on the held-out validation tokens, over exactly the targets the
standard evaluation scores (``val_tokens[1:]`` of a stream of k * seq_len + 1 tokens):

* ``model_ce``: the model's own standard-evaluation loss: the roundtrip ``val_loss`` of the
  dequantized artifact over non-overlapping ``seq_len`` windows, the same windows and model
  the shuffled pass uses (not the sliding-window score, which sees more context).
* ``uniform_ce = ln V``: a model that puts 1/V on every token. Anything that learned at all
  beats it.
* ``unigram_ce``: mean ``-ln p(target)`` under token frequencies counted on the *training*
  split (the first ``max_tokens`` tokens of the train shards, in the order the training
  loader streams them), with add-one (Laplace) smoothing ``p_i = (c_i + 1) / (N + V)`` so no
  validation target has probability 0 (an unsmoothed zero would make the CE infinite). It is
  about the best a model can do without looking at context (only the validation split's own
  frequencies, which no model may see, would do better).
* ``shuffled_ce``: the model's own CE when, in every evaluation window, the *input* positions
  are permuted by a fixed random permutation while the targets stay in place: window ``w``
  (global index, independent of how ranks split the windows) reads
  ``x_shuffled[t] = x[perm_w[t]]``, where ``perm_w`` is the w-th ``torch.randperm(seq_len)``
  drawn from ``torch.Generator().manual_seed(seed)``. The shuffled context holds the same
  tokens in a random order, including tokens that come after position t in the text (even
  t's own target, x[t+1]), so it is an order-destroying control, not a leak-free predictor:
  a model whose CE is not below it does not use the order of its context.

A model that is not below all three by at least `BEAT_MARGIN` fails the check; the runner
logs a loud line and records ``beats_all: false`` in ``submission.json``.

Why (docs/techniques.md §11.5): the published "GREEN" claim of the dancinlab d768 byte model
(model_ce < shuffle_ce and model_ce < uniform_ce) rested on three numbers that all came
from a 24-term atanh series that is not ln (it reads ln 256 as 4.799 and saturates
per-token losses near 5.14), computed on windows that overlapped the training windows,
with a "shuffle" that reversed the *targets* of one forward pass. Here every number is a
true natural log on held-out data with the same scored targets, and the shuffled control
permutes the *inputs* with a recorded seed.
Upstream parameter-golf reports no such baselines; this module is ours.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.api.errors import ConfigError, DataError
from harness.pipeline.eval import (
    Forward,
    autocast_context,
    check_ranks,
    distributed_ready,
    rank_slice,
    require_positive,
    scoring_precision,
)
from harness.pipeline.shards import list_shards, read_shard

BASELINES_VERSION = 1
"""Bumped whenever a number produced here could change."""
DEFAULT_SHUFFLE_SEED = 1337
"""Shuffle seed the runner uses: fixed, so runs with different training seeds see the same permutations."""
DEFAULT_UNIGRAM_TOKENS = 100_000_000
"""Training tokens counted for the unigram: one export shard (docs/protocol.md §1.2, 10**8
tokens). With V <= 1024 the estimate's expected excess CE from sampling is about V / (2N) =
5e-6 nats, far below anything reported, and counting takes about a second (200 MB read)."""
BEAT_MARGIN = 1e-4
"""Nats/token the model must be below a baseline by: float32 logits put ~1e-6 of noise on a
CE, so an exactly uniform model must not "beat" ln V by rounding."""
_COUNT_CHUNK = 1 << 24  # tokens per np.bincount call: bounds its int64 temporary at 128 MB


def uniform_ce(vocab_size: int) -> float:
    """Cross-entropy of the uniform distribution over ``vocab_size`` tokens: ln V nats."""
    require_positive("vocab_size", vocab_size)
    return math.log(vocab_size)


@dataclass(frozen=True, eq=False)
class Unigram:
    """Token frequencies of the training split (eq=False: holds an array)."""

    probs: np.ndarray
    """float64 [V]: Laplace-smoothed probabilities (c_i + 1) / (N + V); sums to 1."""
    tokens: int
    """N, the training tokens counted."""
    shards: int
    """How many train shards were read (the last one possibly in part)."""
    capped: bool
    """True when ``max_tokens`` stopped the count before the end of the train split."""


def train_unigram(
    data_path: str | os.PathLike[str], vocab_size: int, *, max_tokens: int = DEFAULT_UNIGRAM_TOKENS
) -> Unigram:
    """Count the first ``max_tokens`` tokens of the train shards (0 = all) into a `Unigram`.

    Shards are read in sorted order, as the training loader streams them, through memmaps
    in chunks, so memory stays bounded whatever the split's size.
    """
    require_positive("vocab_size", vocab_size)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise ConfigError(f"max_tokens must be a non-negative integer (0 = no cap), got {max_tokens!r}")
    counts = np.zeros(vocab_size, dtype=np.int64)
    total, shards, files = 0, 0, list_shards(data_path, "train")
    for path in files:
        if max_tokens and total >= max_tokens:
            break
        tokens = read_shard(path)
        take = tokens.size if not max_tokens else min(tokens.size, max_tokens - total)
        _count_into(counts, tokens[:take], path)
        total += take
        shards += 1
    if total == 0:
        raise DataError(f"the train shards in {data_path} hold no tokens; cannot count a unigram")
    capped = bool(max_tokens) and (shards < len(files) or take < tokens.size)
    probs = (counts + 1).astype(np.float64) / float(total + vocab_size)
    return Unigram(probs=probs, tokens=total, shards=shards, capped=capped)


def _count_into(counts: np.ndarray, tokens: np.ndarray, path: Any) -> None:
    """Add the ids of ``tokens`` to ``counts``; DataError naming ``path`` for an id >= V."""
    vocab_size = counts.size
    for start in range(0, tokens.size, _COUNT_CHUNK):
        chunk = np.asarray(tokens[start : start + _COUNT_CHUNK])
        binned = np.bincount(chunk, minlength=vocab_size)
        if binned.size > vocab_size:
            pos = start + int(np.flatnonzero(chunk >= vocab_size)[0])
            raise DataError(
                f"{path}: token id {int(tokens[pos])} at position {pos} is >= vocab_size {vocab_size}"
            )
        counts += binned


def unigram_ce(probs: np.ndarray, val_tokens: torch.Tensor) -> float:
    """Mean ``-ln probs[target]`` over ``val_tokens[1:]``, the targets the standard evaluation scores."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size == 0:
        raise ConfigError(f"unigram probs must be a non-empty 1-D array, got shape {probs.shape}")
    if not (np.all(np.isfinite(probs)) and np.all(probs > 0)):
        raise ConfigError("unigram probs must be finite and > 0 everywhere (smooth the counts)")
    if abs(float(probs.sum()) - 1.0) > 1e-6:
        raise ConfigError(f"unigram probs must sum to 1, got {float(probs.sum())!r}")
    _check_val_tokens(val_tokens, 2)
    targets = val_tokens[1:].numpy()
    if int(targets.max()) >= probs.size:
        raise DataError(
            f"val_tokens holds id {int(targets.max())}, outside the unigram's vocabulary of {probs.size}"
        )
    hits = np.bincount(targets, minlength=probs.size)
    # A dot product of per-id counts with -ln p: exact float64, no per-token temporaries.
    return float(np.dot(hits.astype(np.float64), -np.log(probs))) / targets.size


def _check_val_tokens(val_tokens: torch.Tensor, min_len: int) -> None:
    if (
        not isinstance(val_tokens, torch.Tensor)
        or val_tokens.dim() != 1
        or val_tokens.dtype != torch.int64
        or val_tokens.device.type != "cpu"
    ):
        shape = tuple(val_tokens.shape) if isinstance(val_tokens, torch.Tensor) else type(val_tokens).__name__
        raise DataError(f"val_tokens must be a 1-D int64 CPU tensor, got {shape}")
    if val_tokens.numel() < min_len:
        raise DataError(f"val_tokens has {val_tokens.numel()} tokens, need at least {min_len}")
    if int(val_tokens.min()) < 0:
        raise DataError(f"val_tokens holds the negative id {int(val_tokens.min())}")


class WindowPermutations:
    """The shuffle permutations, window by window: window w gets the w-th
    ``torch.randperm(seq_len)`` drawn from ``torch.Generator().manual_seed(seed)``.

    Starting at window ``first`` draws and drops the earlier ones (about 10 us each), so a
    rank's permutations do not depend on how the windows were split across ranks. Drawn per
    batch, never all at once (60k windows x 1024 positions would be 0.5 GB of int64).
    """

    def __init__(self, seed: int, seq_len: int, first: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"shuffle seed must be an integer, got {seed!r}")
        require_positive("seq_len", seq_len)
        self.seq_len = seq_len
        self._gen = torch.Generator().manual_seed(seed)
        for _ in range(first):
            torch.randperm(seq_len, generator=self._gen)

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` windows' permutations: int64 [count, seq_len] on CPU."""
        if count <= 0:
            return torch.zeros(0, self.seq_len, dtype=torch.int64)
        return torch.stack([torch.randperm(self.seq_len, generator=self._gen) for _ in range(count)])


def shuffled_context_sums(
    forward: Forward,
    val_tokens: torch.Tensor,
    *,
    seq_len: int,
    batch_seqs: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, int]:
    """(summed CE in nats, scored targets) of the shuffled-context pass; see `shuffled_context_ce`.

    With an active process group the sums cover all ranks; without one, this rank's share.
    """
    require_positive("seq_len", seq_len)
    require_positive("batch_seqs", batch_seqs)
    check_ranks(rank, world_size)
    _check_val_tokens(val_tokens, seq_len + 1)
    if (val_tokens.numel() - 1) % seq_len:
        raise DataError(
            f"val_tokens has {val_tokens.numel()} tokens; the shuffled-context pass needs "
            f"k * seq_len + 1 with seq_len={seq_len} (truncate the stream first)"
        )
    device = torch.device(device)
    top_id = int(val_tokens.max())
    first, last = rank_slice((val_tokens.numel() - 1) // seq_len, rank, world_size)
    perms = WindowPermutations(seed, seq_len, first)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for seq in range(first, last, batch_seqs):
            end = min(seq + batch_seqs, last)
            chunk = val_tokens[seq * seq_len : end * seq_len + 1].to(device, non_blocking=True)
            x = chunk[:-1].view(-1, seq_len)  # [B, T]
            y = chunk[1:].view(-1, seq_len)  # [B, T], left in place
            x = torch.gather(x, 1, perms.take(end - seq).to(device, non_blocking=True))
            loss += _nll_sum(forward, x, y, autocast_dtype, top_id)
    tokens = (last - first) * seq_len
    if world_size > 1 and distributed_ready():
        packed = torch.stack([loss, torch.tensor(float(tokens), dtype=torch.float64, device=device)])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        loss, tokens = packed[0], int(round(float(packed[1].item())))
    return float(loss.item()), tokens


def _nll_sum(
    forward: Forward, x: torch.Tensor, y: torch.Tensor, autocast_dtype: torch.dtype | None, top_id: int
) -> torch.Tensor:
    """Summed float64 cross-entropy of targets ``y`` after inputs ``x`` (as harness.pipeline.eval
    scores it)."""
    with autocast_context(x.device, autocast_dtype):
        logits = forward(x)
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(x.shape) or logits.shape[-1] <= top_id:
        raise ConfigError(
            f"model forward returned logits of shape {tuple(logits.shape)}, expected "
            f"({x.shape[0]}, {x.shape[1]}, V) with V > {top_id}, the largest validation id"
        )
    logits = scoring_precision(logits)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return nll.sum(dtype=torch.float64)


def shuffled_context_ce(
    forward: Forward,
    val_tokens: torch.Tensor,
    *,
    seq_len: int,
    batch_seqs: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> float:
    """The model's mean CE (nats/token) with each window's input positions permuted.

    Same non-overlapping ``seq_len`` windows, rank split and target set as
    `harness.pipeline.eval.evaluate_standard`; window w's inputs are permuted by the w-th permutation
    of ``seed`` (`window_permutations`), targets stay in place. Every rank must call it when a
    process group is active (one all-reduce). NaN when this rank scored nothing and no group
    is active.
    """
    loss, tokens = shuffled_context_sums(
        forward,
        val_tokens,
        seq_len=seq_len,
        batch_seqs=batch_seqs,
        device=device,
        autocast_dtype=autocast_dtype,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    return loss / tokens if tokens else math.nan


@dataclass(frozen=True)
class BaselineReport:
    """The model's CE next to the three baselines; ``beats_all`` is derived, never passed."""

    model_ce: float
    """The model's standard-evaluation CE (nats/token) on the validation targets."""
    uniform_ce: float
    """ln V."""
    unigram_ce: float
    """CE of the Laplace-smoothed training unigram on the same targets."""
    shuffled_ce: float
    """The model's CE with each window's inputs permuted (targets in place)."""
    shuffle_seed: int
    """Seed of the window permutations."""
    unigram_tokens: int
    """Training tokens the unigram was counted on."""
    beats_all: bool = field(init=False)
    """True when model_ce is below every baseline by at least `BEAT_MARGIN`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "beats_all", not self.not_beaten())

    def not_beaten(self) -> list[str]:
        """Names of the baselines the model is not below (NaN counts as not below)."""
        baselines = {"uniform": self.uniform_ce, "unigram": self.unigram_ce, "shuffled": self.shuffled_ce}
        return [name for name, value in baselines.items() if not self.model_ce < value - BEAT_MARGIN]

    def as_record(self) -> dict[str, Any]:
        """JSON-ready dict for ``submission.json["baselines"]`` (NaN becomes null when written)."""
        return {
            "model_ce": float(self.model_ce),
            "uniform_ce": float(self.uniform_ce),
            "unigram_ce": float(self.unigram_ce),
            "shuffled_ce": float(self.shuffled_ce),
            "shuffle_seed": int(self.shuffle_seed),
            "unigram_tokens": int(self.unigram_tokens),
            "beats_all": bool(self.beats_all),
            "not_beaten": self.not_beaten(),
            "units": "nats/token, natural log, held-out validation targets",
            "baselines_version": BASELINES_VERSION,
        }

    def log_line(self) -> str:
        """The log line: ``baselines: model_ce:… uniform_ce:… unigram_ce:… shuffled_ce:… seed:…
        unigram_tokens:… beats_all:…``."""
        return (
            f"baselines: model_ce:{self.model_ce:.4f} uniform_ce:{self.uniform_ce:.4f} "
            f"unigram_ce:{self.unigram_ce:.4f} shuffled_ce:{self.shuffled_ce:.4f} seed:{self.shuffle_seed} "
            f"unigram_tokens:{self.unigram_tokens} beats_all:{self.beats_all}"
        )

    def alert_line(self) -> str | None:
        """The loud line to log when the check fails; None when the model beats all three."""
        missed = self.not_beaten()
        if not missed:
            return None
        return f"!!! BASELINE CHECK FAILED: model does not beat {', '.join(missed)} !!!"
