"""The leaderboard's data model: one `Entry` per submission (upstream record folder or one of
our submissions), with its per-seed results and the flags a machine check raised.

Shared by the record importer (`harness.leaderboard.records`), the leaderboard renderer
(`harness.leaderboard.render`) and the significance test (`harness.leaderboard.significance`). Built from JSON
and logs only: nothing here ever imports or runs submission code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Flags (stable strings: they appear in the rendered tables and in tests).
FLAG_OVER_BUDGET = "over_budget"
FLAG_SCORE_UNSUPPORTED = "score_not_in_logs"
FLAG_SEEDS_WITHOUT_LOGS = "seeds_claimed_logs_missing"
FLAG_FEW_SEEDS = "fewer_than_3_seeds"
FLAG_NO_LOGS = "no_logs"
FLAG_BASELINES = "does_not_beat_baselines"

NONRECORD_PROTOCOL_SUFFIX = "_nonrecord"
"""What a run adds to its ``protocol`` when it is not scored by the record protocol
(``full_nonrecord``, ``smoke_nonrecord``: ``harness/pipeline/setup.py``)."""


@dataclass
class SeedResult:
    """One seed's numbers, from submission.json and/or its train log."""

    seed: str | None
    val_bpb: float | None = None
    val_loss: float | None = None
    bytes_total: int | None = None
    steps: int | None = None
    ms_per_step: float | None = None
    log_file: str | None = None
    """Relative path of the log this seed's numbers were read from (None: JSON only)."""


@dataclass
class Entry:
    """One leaderboard row (a submission, its seeds grouped)."""

    key: str
    """Folder name (upstream record) or submission name (our runs)."""
    name: str
    author: str = ""
    github_id: str = ""
    date: str = ""
    """YYYY-MM-DD."""
    track: str = ""
    protocol: str = "upstream"
    """"full" / "smoke" for our runs, "upstream" for imported records."""
    dataset_sha256: str | None = None
    """Only entries with the same dataset and tokenizer fingerprints are ranked against each other."""
    tokenizer_sha256: str | None = None
    non_record: str = ""
    """Why the entry's protocol is not the record protocol (e.g. an eval stride other than 64);
    such entries get a table of their own and are never ranked with records."""
    score_bpb: float | None = None
    """The headline score (bits per byte)."""
    score_source: str = ""
    """Which JSON field or log line the headline came from."""
    seeds: list[SeedResult] = field(default_factory=list)
    bytes_total: int | None = None
    steps: int | None = None
    ms_per_step: float | None = None
    tokens_per_byte: float | None = None
    """val_tokens / val_bytes, to convert nats <-> bpb (None when unknown)."""
    summary: str = ""
    flags: list[str] = field(default_factory=list)
    source_path: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (dataclasses to dicts)."""
        return asdict(self)


@dataclass
class Excluded:
    """One of our runs that no statistic counts, and why (`harness.leaderboard.pooling`)."""

    name: str
    """The submission it belongs to."""
    run: str
    """Its run folder's name."""
    seed: str | None
    val_bpb: float | None
    reason: str
    entry_key: str = ""
    """The key of the entry it would have joined ("" when it joins none, e.g. an invalid run)."""
    source_path: str = ""
