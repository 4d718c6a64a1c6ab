"""Atomic file writes shared by the harness: a temp file in the target's folder, fsync,
then a rename, then an fsync of the folder (so the rename itself is durable), so a crash,
a SIGKILL or a full disk never leaves half a file at the final path: readers see the old
file or the new one. Temp files are named ``.<name>.<random>.tmp`` (hidden, never matching a
final name); a killed writer may leave one behind, which no reader mistakes for a result.

``overwrite=False`` publishes with ``os.link``, which fails if the target exists, so two
writers can never replace each other's file (used for artifacts: nothing a run wrote is
ever replaced).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomic(
    path: Path, chunks: bytes | Iterable[bytes], *, overwrite: bool = True, mode: int = 0o644
) -> None:
    """Write ``chunks`` (bytes or an iterable of bytes) to ``path`` atomically.

    Raises ``FileExistsError`` when ``overwrite`` is False and ``path`` exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in [chunks] if isinstance(chunks, (bytes, bytearray, memoryview)) else chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _publish_new(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # filesystems without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)
