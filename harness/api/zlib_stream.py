"""Bounded reading of one zlib stream, for the two readers of one: the zlib compressor's payload
(`plugins/compress/zlib.py`) and the artifact container's version 2 manifest
(`harness/pipeline/artifact_manifest.py`).

Both read bytes a submission or a download may have crafted, so decompression stops one byte
past the caller's limit (a decompression bomb costs at most that much memory), and the stream
must end exactly where the data ends: truncated or trailing bytes are refused, not ignored.
"""

from __future__ import annotations

import zlib

from harness.api.errors import ArtifactError


def inflate_bounded(data: bytes, limit: int, what: str) -> bytes:
    """The bytes of the single zlib stream ``data``, at most ``limit`` of them; an ArtifactError
    that starts with ``what`` (the file or payload being read) otherwise."""
    inflater = zlib.decompressobj()
    try:
        # One byte over the limit tells it was exceeded; a max_length of 0 would mean "unbounded".
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ArtifactError(f"{what} is not a valid zlib stream ({exc})") from None
    if len(out) > limit:
        raise ArtifactError(f"{what} decompresses to more than {limit} bytes")
    if not inflater.eof:
        raise ArtifactError(f"{what} is a truncated zlib stream")
    if inflater.unused_data:
        raise ArtifactError(f"{what} has {len(inflater.unused_data)} bytes after its zlib stream")
    return out
