"""Calibration for the export: batches of random train-shard windows (never validation) and the
``calibrate`` step that runs a `CalibratedQuantizer` (GPTQ) over them.

Whatever runs before quantization (GPTQ Hessians, pruning statistics) reads tokens through
`TrainCalibration` only (`harness.api.protocols.CalibrationData`). It is built from
``list_shards(data_path, "train")`` and nothing else, so no validation token can reach it;
asking it for another split raises `ConfigError` (calibrating on validation text was ruled
illegal: docs/protocol.md §7.1).

The sampler follows the record of 2026-04-09 (SP8192, 3-layer recurrence, its
``ShuffledSequenceLoader`` re-created for GPTQ): each row is a window of ``seq_len`` tokens
at a random start in a shard chosen in proportion to its windows, and a batch is one
training micro-batch of this rank (``train_batch_tokens // (world_size * grad_accum)``
tokens). Its generator is its own (numpy PCG64 from the run seed), so the training loader
and the global RNGs are left as they were. **Difference:** the record's loader draws without
replacement from the shards of its rank; here windows are drawn with replacement from every
train shard (only rank 0 calibrates, see `harness.pipeline.export`).

A module the export imports by name (`harness.api.by_name.CALIBRATION_MODULE`): only a run whose
configuration names it in ``modules_by_name()`` (the ``gptq`` quantizer; a ``pg_before_quantize``
plugin that reads ``TrainContext.calibration``) ships it, so the baseline's int8 export and every
quantizer that never calibrates leave it out of their bundles (pgolf issue 13).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from harness.api.context import TrainContext
from harness.api.errors import ConfigError, DataError
from harness.api.protocols import CalibratedQuantizer
from harness.pipeline.eval import autocast_context
from harness.pipeline.shards import check_token_range, list_shards, read_shard, read_shard_header

if TYPE_CHECKING:
    from harness.pipeline.setup import RunState


class TrainCalibration:
    """`CalibrationData` over the train shards of ``data_path``."""

    def __init__(
        self,
        data_path: str | Path,
        *,
        vocab_size: int,
        rows: int,
        seq_len: int,
        device: torch.device | str,
        seed: int,
    ) -> None:
        if rows <= 0 or seq_len <= 0:
            raise ConfigError(f"calibration batches need rows > 0 and seq_len > 0, got {rows} x {seq_len}")
        self.files = list_shards(data_path, "train")
        self.rows, self.seq_len, self.device = rows, seq_len, torch.device(device)
        self.tokens_served = 0
        self._vocab_size = vocab_size
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._shards: dict[int, np.ndarray] = {}
        counts = np.array([read_shard_header(f) for f in self.files], dtype=np.int64)
        # Windows starting at 0 .. n - seq_len: n - seq_len + 1 of them (none in a short shard).
        self._windows = np.clip(counts - seq_len + 1, 0, None)
        self._data_path = data_path

    def batches(self, count: int, *, split: str = "train") -> Iterator[torch.Tensor]:
        """``count`` (rows, seq_len) int64 batches of train tokens on the device."""
        if split != "train":
            raise ConfigError(
                f"calibration data: split {split!r} refused; calibration before quantization reads "
                "training tokens only (validation data may not be used before scoring)"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"calibration data: count must be an integer >= 0, got {count!r}")
        if count and self._windows.sum() == 0:  # only an error for a run that asks for batches
            raise DataError(
                f"no train shard in {self._data_path} holds a window of seq_len={self.seq_len} "
                "tokens for calibration"
            )
        return self._generate(count)

    def _generate(self, count: int) -> Iterator[torch.Tensor]:
        for _ in range(count):
            yield self._batch().to(self.device)

    def _batch(self) -> torch.Tensor:
        weights = self._windows / self._windows.sum()
        shard_of_row = self._rng.choice(len(self.files), size=self.rows, p=weights)
        out = np.empty((self.rows, self.seq_len), dtype=np.int64)
        for r, idx in enumerate(shard_of_row):
            start = int(self._rng.integers(self._windows[idx]))
            window = self._tokens(int(idx))[start : start + self.seq_len]
            # Checked per window: scanning whole shards up front would read gigabytes.
            check_token_range(window, self._vocab_size, self.files[int(idx)])
            out[r] = window
        self.tokens_served += out.size
        return torch.from_numpy(out)

    def _tokens(self, idx: int) -> np.ndarray:
        if idx not in self._shards:
            self._shards[idx] = read_shard(self.files[idx])
        return self._shards[idx]


def calibration_data(run: RunState) -> TrainCalibration:
    """Train-shard batches shaped like one training micro-batch of this rank, from the run seed."""
    train = run.config.train
    local = train.train_batch_tokens // (run.dist.world_size * run.accum)
    return TrainCalibration(
        run.data.data_path,
        vocab_size=run.config.data.vocab_size,
        rows=max(local // train.train_seq_len, 1),
        seq_len=train.train_seq_len,
        device=run.dist.device,
        seed=train.seed,
    )


def calibrate(run: RunState, ctx: TrainContext, quantizer: CalibratedQuantizer) -> None:
    """``quantizer.calibrate`` on the trained model (eval mode, no grad, the run's autocast)."""
    model, data = ctx.model, ctx.calibration
    was_training = model.training
    before, t0 = data.tokens_served, time.perf_counter()
    model.eval()
    try:
        with torch.no_grad(), autocast_context(run.dist.device, ctx.autocast_dtype):
            summary = quantizer.calibrate(model, data)
    finally:
        model.train(was_training)
    seconds, tokens = time.perf_counter() - t0, data.tokens_served - before
    run.log.log(
        f"calibration:{quantizer.name} {summary} train_tokens:{tokens} seed:{run.config.train.seed} "
        f"time:{seconds:.1f}s",
        event="calibration",
        train_tokens=tokens,
        seconds=seconds,
    )
