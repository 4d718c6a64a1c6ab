"""The run's two logs: ``train.log`` (upstream ``key:value`` lines) and ``metrics.jsonl``.

``train.log`` keeps the line formats of the upstream `train_gpt.py` (docs/protocol.md §9.1,
family A) so existing log parsers and leaderboard scrapers read our runs; ``metrics.jsonl``
carries the same facts as one JSON object per event for machines. Only rank 0 writes.
Every line is flushed as it is written, so a crash loses nothing already logged.

Both files are append-only rather than written atomically: a kill can at worst leave the
LAST line torn (no newline), never damage earlier ones. A logger opening the files again
(``--resume``) first cuts such a torn tail. Readers must trust only newline-terminated lines
(`harness.leaderboard.records.complete_lines` drops a torn tail before
`harness.leaderboard.logparse` sees the log; a metrics.jsonl reader should skip an
unterminated last line).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class RunLogger:
    """Writes ``train.log`` and ``metrics.jsonl`` in ``run_dir`` (rank 0) and echoes to stdout."""

    def __init__(
        self, run_dir: Path | None, rank: int = 0, echo: bool = True, stream: TextIO | None = None
    ) -> None:
        self.rank = rank
        self.echo = echo and rank == 0
        self.stream = stream or sys.stdout
        self._log: TextIO | None = None
        self._jsonl: TextIO | None = None
        if run_dir is not None and rank == 0:
            # Append mode: a logger never truncates what an earlier writer left, except a
            # torn last line (a killed writer's), which would otherwise merge with ours.
            self._log = _open_append(run_dir / "train.log")
            self._jsonl = _open_append(run_dir / "metrics.jsonl")

    def log(self, line: str, event: str | None = None, **fields: Any) -> None:
        """Write ``line`` to train.log (and stdout); with ``event``, also a JSON record."""
        if self.rank != 0:
            return
        if self.echo:
            print(line, file=self.stream, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()
        if event is not None:
            self.event(event, **fields)

    def event(self, name: str, **fields: Any) -> None:
        """Append one JSON object ``{"event": name, "time": ..., **fields}`` to metrics.jsonl."""
        if self.rank != 0 or self._jsonl is None:
            return
        record = {
            "event": name,
            "time": round(time.time(), 3),
            **{k: _jsonable(v) for k, v in fields.items()},
        }
        self._jsonl.write(json.dumps(record, sort_keys=True) + "\n")
        self._jsonl.flush()

    def error(self, line: str, **fields: Any) -> None:
        """Append a failed run's final ``error:`` line to train.log and an ``error`` event, without
        echoing it (the entry point prints it once, to stderr). Best effort: a full disk may
        refuse this write too, and that must not hide the original failure."""
        try:
            if self.rank == 0 and self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()
            self.event("error", message=line, **fields)
        except OSError:
            pass

    def close(self) -> None:
        """Close the files (safe to call twice; a write a full disk refused is dropped here)."""
        for f in (self._log, self._jsonl):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._log = self._jsonl = None


def _open_append(path: Path) -> TextIO:
    """``path`` opened for appending, after cutting an unterminated last line (if any)."""
    with open(path, "ab+") as f:
        size = f.seek(0, 2)
        if size:
            f.seek(max(size - 1, 0))
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    """JSON-safe value: non-finite floats become strings ("nan", "inf") instead of invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value
