"""Exception types of the harness: each carries one message naming the file, field or value."""

from __future__ import annotations


class PgolfError(Exception):
    """Base class: the CLI prints the message alone (no traceback) and exits with status 2."""


class ConfigError(PgolfError):
    """A configuration value, key or combination is invalid."""


class DataError(PgolfError):
    """A data shard, tokenizer or data path is missing or malformed."""


class ArtifactError(PgolfError):
    """An artifact file is malformed, tampered with or unreadable."""


class TrainingDiverged(PgolfError):
    """The training loss became NaN or infinite."""


class EvalTimeLimit(PgolfError):
    """An evaluation passed its wall-clock deadline and stopped between two batches."""


class TrainingInterrupted(PgolfError):
    """Training stopped on purpose after a checkpoint (``train.stop_after_step``)."""


class DataNotPrepared(DataError):
    """The built-in default data is not prepared where a shipped bundle looks for it. Its text
    names the command that prepares it, so the shipped form keeps it whole
    (`harness.tools.error_sites` shortens only the listed refusal types)."""
