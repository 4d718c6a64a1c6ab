"""Writing ``submission.json``: the upstream keys (docs/protocol.md §8) plus the facts a
machine-built leaderboard needs (protocol, fingerprints, validity), written atomically.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.api.fileio import write_atomic

REQUIRED_KEYS = (
    "name",
    "author",
    "github_id",
    "date",
    "track",
    "protocol",
    "val_bpb",
    "val_loss",
    "pre_quant_val_bpb",
    "roundtrip_val_bpb",
    "sliding_val_bpb",
    "eval_stride",
    "bytes_total",
    "bytes_code",
    "bytes_model",
    "model_params",
    "steps",
    "ms_per_step",
    "train_time_ms",
    "eval_time_ms",
    "seed",
    "world_size",
    "device",
    "quantizer",
    "compressor",
    "dataset_sha256",
    "tokenizer_sha256",
    "harness_version",
)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a missing score is null, never a fake number
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_submission_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as pretty JSON via a temp file + rename, so a crash never leaves half a file."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"submission record lacks {', '.join(missing)}")
    write_atomic(path, (json.dumps(_clean(record), indent=2) + "\n").encode("utf-8"))
