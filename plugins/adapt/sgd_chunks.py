"""Score-first TTT by SGD over scored chunks, as an ``adapter`` component (name ``sgd_chunks``).

The adaptation of the 2026-04-09 SP8192 record (``eval_val_ttt``; the method of PR #549,
tuned in PR #1413): after the harness has scored a chunk of the validation stream (32,768
targets there), the chunk's tokens are cut into rows of ``seq_len`` and the whole model
trains on them for 3 epochs with SGD (lr 0.005, momentum 0.9, one optimizer kept across
chunks), the total gradient norm clipped to 1.0, the LR following a cosine over the chunks:
lr * (1 + cos(pi * c / (C - 1))) / 2 for chunk c of C. The harness decides what the adapter
may see (`harness.api.adaptation`); this module only decides how to learn from it.

Several ranks: each optimizer step takes ``batch_seqs`` consecutive rows of the chunk, every
rank a contiguous share (upstream's integer split), the loss is the mean over the step's
tokens on all ranks, and the gradients are summed across ranks before clipping, so every rank
takes the same step and the result does not depend on the world size. Upstream takes 32 rows
per rank and averages the ranks' means; with its 16 rows per chunk both are one step of the
same mean.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.api.adaptation import AdaptSession, ScoredChunk
from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


def _check(name: str, value: object, ok: bool, expected: str) -> None:
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"sgd_chunks.{name}: expected {expected}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SgdChunksConfig:
    """SGD with momentum on each scored chunk; the record's settings by default."""

    lr: float = 0.005
    """Peak learning rate (first chunk); a cosine takes it to 0 at the last chunk. 0 = no change."""
    momentum: float = 0.9
    """SGD momentum, in [0, 1); the buffer is kept across chunks."""
    epochs: int = 3
    """Passes over each chunk's rows; 0 = no adaptation."""
    grad_clip: float = 1.0
    """Clip the total gradient norm to this value; 0 = off."""
    seq_len: int = 0
    """Tokens per training row; 0 = the evaluation's sliding window (upstream: eval_seq_len)."""
    batch_seqs: int = 32
    """Rows per optimizer step, over all ranks."""

    def __post_init__(self) -> None:
        _check("lr", self.lr, isinstance(self.lr, (int, float)) and 0 <= self.lr < math.inf, "a float >= 0")
        m = self.momentum
        _check("momentum", m, isinstance(m, (int, float)) and 0 <= m < 1, "a float in [0, 1)")
        _check("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs >= 0, "an int >= 0")
        g = self.grad_clip
        _check("grad_clip", g, isinstance(g, (int, float)) and 0 <= g < math.inf, "a float >= 0")
        _check("seq_len", self.seq_len, isinstance(self.seq_len, int) and self.seq_len >= 0, "an int >= 0")
        b = self.batch_seqs
        _check("batch_seqs", b, isinstance(b, int) and b >= 1, "an int >= 1")

    def build(self) -> SgdChunks:
        """The adapter."""
        return SgdChunks(self)


class SgdChunks:
    """`harness.api.protocols.Adapter`: SGD over the rows of every scored chunk."""

    name = "sgd_chunks"

    def __init__(self, cfg: SgdChunksConfig) -> None:
        self.cfg = cfg

    def start(self, model: torch.nn.Module, session: AdaptSession) -> None:
        """Keep the model and one SGD optimizer over all of its parameters."""
        self.model, self.session = model, session
        self.params = list(model.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.opt = torch.optim.SGD(self.params, lr=self.cfg.lr, momentum=self.cfg.momentum)

    def lr_at(self, index: int, count: int) -> float:
        """The cosine LR of chunk ``index`` of ``count``."""
        return self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * index / max(count - 1, 1)))

    def adapt(self, chunk: ScoredChunk) -> None:
        """``epochs`` passes of SGD over the chunk's full rows (a partial row is left out)."""
        cfg, s = self.cfg, self.session
        seq = cfg.seq_len or s.window
        rows = (chunk.tokens.numel() - 1) // seq
        if rows == 0 or cfg.epochs == 0:
            return
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(chunk.index, chunk.count)
        tokens = chunk.tokens[: rows * seq + 1].to(s.device)
        x, y = tokens[:-1].view(rows, seq), tokens[1:].view(rows, seq)
        for _ in range(cfg.epochs):
            for first in range(0, rows, cfg.batch_seqs):
                step_rows = min(cfg.batch_seqs, rows - first)
                lo = first + step_rows * s.rank // s.world_size
                hi = first + step_rows * (s.rank + 1) // s.world_size
                self._step(x[lo:hi], y[lo:hi], step_rows * seq)

    def _step(self, x: torch.Tensor, y: torch.Tensor, step_tokens: int) -> None:
        s = self.session
        self.opt.zero_grad(set_to_none=True)
        if x.numel():
            autocast = (
                torch.autocast(device_type=s.device.type, dtype=s.autocast_dtype)
                if s.autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                logits = self.model(x)
            logits = logits if logits.dtype == torch.float64 else logits.float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            (loss / step_tokens).backward()
        for p in self.params:  # a rank without rows still joins the sum with zeros
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        s.sum_across_ranks([p.grad for p in self.params])
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``SgdChunksConfig`` as the ``adapter`` component ``sgd_chunks``."""
    registry.register("adapter", "sgd_chunks", SgdChunksConfig)
