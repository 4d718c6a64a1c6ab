"""The byte budget, measured from the files that ship and nothing else.

Challenge rule (README FAQ, docs/protocol.md §4.3, §6.1): code bytes + compressed model bytes
must not exceed 16,000,000 (decimal). docs/pitfalls.md §2 records the disputes that follow from
counting a number computed inside the run; here ``bytes_code`` is the size on disk of the
bundled ``train_gpt.py`` and ``bytes_model`` the size on disk of the artifact file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BYTE_LIMIT = 16_000_000


@dataclass(frozen=True)
class Budget:
    """Sizes on disk and the verdict."""

    bytes_code: int
    bytes_model: int
    limit: int = BYTE_LIMIT

    @property
    def bytes_total(self) -> int:
        """Code plus model bytes: the number the cap applies to."""
        return self.bytes_code + self.bytes_model

    @property
    def over_budget(self) -> bool:
        """True when the total exceeds the limit."""
        return self.bytes_total > self.limit

    @property
    def headroom(self) -> int:
        """Bytes left under the limit (negative when over)."""
        return self.limit - self.bytes_total


def measure_budget(code_path: Path, artifact_path: Path, limit: int | None = None) -> Budget:
    """Stat the shipped files; nothing else is trusted. ``limit`` defaults to ``BYTE_LIMIT``."""
    return Budget(
        os.path.getsize(code_path), os.path.getsize(artifact_path), BYTE_LIMIT if limit is None else limit
    )
