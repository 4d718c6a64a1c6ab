"""The byte tokenizer spec: the ``tokenizer.json`` beside a byte-level dataset (vocabulary
256, token = one UTF-8 byte), which the byte tables of `harness.pipeline.bpb` recognise in
place of a SentencePiece model. Format ``pgolf-bytes/1`` (docs/formats.md); the datasets
that carry it are written by `harness.datasets.byte_level`.

Every bundle carries `looks_like_byte_spec` (the scorer asks it which kind a tokenizer file
is); reading and checking a spec is reached only through `harness.pipeline.byte_data`, which
only byte-level runs embed, so a token-model bundle ships nothing else of this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.api.errors import DataError
from harness.api.fileio import write_atomic

BYTE_VOCAB = 256
SPEC_FORMAT = "pgolf-bytes/1"
SPEC_NAME = "tokenizer.json"
"""File name of the spec beside the byte shards."""
BYTE_TOKENIZER_SPEC: dict[str, Any] = {"format": SPEC_FORMAT, "kind": "bytes", "vocab_size": BYTE_VOCAB}


def write_byte_tokenizer_spec(path: str | Path) -> Path:
    """Write the byte tokenizer spec to ``path`` (a file, or a folder to hold ``tokenizer.json``).

    The bytes are fixed (sorted keys, one trailing newline) so `tokenizer_sha256` of the
    spec is the same on every machine.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_NAME
    text = json.dumps(BYTE_TOKENIZER_SPEC, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode("utf-8"))
    return path


def looks_like_byte_spec(path: str | Path) -> bool:
    """True when ``path`` is a file that claims to be a byte tokenizer spec: a ``.json`` name or a
    leading ``{`` (a SentencePiece model, protobuf, starts with 0x0A). The claim is not checked
    here; a file that makes it is read as a spec (`read_byte_tokenizer_spec`), never as a
    SentencePiece model, so a broken spec fails with a message about the spec."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".json":
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return head.lstrip().startswith(b"{")


def read_byte_tokenizer_spec(path: str | Path) -> dict[str, Any]:
    """The parsed spec at ``path``; DataError naming the file and the field unless it is exactly ours."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"byte tokenizer spec {str(path)!r} cannot be read: {exc}") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"byte tokenizer spec {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise DataError(
            f"byte tokenizer spec {str(path)!r}: expected a JSON object, got {type(spec).__name__}"
        )
    unknown = sorted(set(spec) - set(BYTE_TOKENIZER_SPEC))
    if unknown:
        raise DataError(
            f"byte tokenizer spec {str(path)!r}: unknown field(s) {unknown}; "
            f"expected only {sorted(BYTE_TOKENIZER_SPEC)}"
        )
    for field, expected in BYTE_TOKENIZER_SPEC.items():
        got = spec.get(field)
        # type() check: JSON true would otherwise equal 1 and pass as a number.
        if type(got) is not type(expected) or got != expected:
            raise DataError(
                f"byte tokenizer spec {str(path)!r}: field {field!r} is {got!r}, expected {expected!r}"
            )
    return spec


def is_byte_tokenizer(path: str | Path) -> bool:
    """True when ``path`` is a byte tokenizer spec, False for anything else (e.g. a ``.model``).

    A file that claims to be a spec (a ``.json`` name or JSON text) but is malformed raises
    DataError instead of returning False, so a broken spec is never read as a SentencePiece
    model (which would fail with a misleading message). A missing file returns False.
    """
    if not looks_like_byte_spec(path):
        return False
    read_byte_tokenizer_spec(path)
    return True
