"""The shell of the shipped ``train_gpt.py``: the minified bundle compressed into one Python
string literal that decompresses and runs it, and the way back (reading a shell without running it).

Every byte of the shell counts toward the 16,000,000, so both of its choices are made by
measurement (pgolf issue 13; `docs/architecture.md`, "What ships", has the table):

* **Codec**: lzma (preset 9 extreme), zlib (level 9) and brotli (quality 11, window 2**24) are
  all tried on each bundle and the smallest is kept; a tie keeps the first of that order
  (standard library first). On the minified bundles brotli wins by about 3 % over lzma, and
  zlib loses by about 12 %. brotli is tried only for a bundle whose code already imports it
  (`shell_codecs`: a run that compresses its model with the ``brotli`` plugin). The shell runs
  before anything else, and upstream's environment (its requirements.txt) has no brotli, so the
  shipped file of any other run would fail to start there for 3 % of its code bytes.
* **Encoding**: ``latin1`` (the default) writes the compressed bytes as they are into a
  ``str`` literal of a file that declares ``# coding: latin-1`` (PEP 263), where every byte
  value decodes to the character of the same number and ``.encode("latin-1")`` gives the bytes
  back. Five values must be escaped: backslash and the quote (the literal's syntax), LF and CR
  (Python turns line ends in source into LF, so a raw CR would not survive) and NUL (not allowed
  in source), each with one more character (NUL with three before an octal digit). That costs
  about 2 % where base85, which upstream's records use from PR #1285 on,
  costs 25 % (5 characters per 4 bytes): on ``baseline`` the shell shrinks from 54,735 to
  43,318 bytes. ``base85`` stays available (``pgolf bundle --ascii``) for a file that must be
  pure ASCII; its lzma shell is byte for byte the one the harness wrote before.

A latin-1 shell is two lines (the coding line, then the code) with no raw line end inside the
literal, so git's text detection and line-end conversion see an ordinary text file.
"""

from __future__ import annotations

import ast
import base64
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from harness.api.errors import ArtifactError, DataError
from plugins.compress.brotli import BrotliConfig
from plugins.compress.lzma import LzmaConfig
from plugins.compress.zlib import ZlibConfig

CODECS: tuple[str, ...] = ("lzma", "zlib", "brotli")
STDLIB_CODECS: tuple[str, ...] = ("lzma", "zlib")
ENCODINGS: tuple[str, ...] = ("latin1", "base85")
_CODEC_CONFIGS: dict[str, Callable[[], Any]] = {
    "lzma": lambda: LzmaConfig(preset=9, extreme=True),
    "zlib": lambda: ZlibConfig(level=9),
    "brotli": lambda: BrotliConfig(quality=11, lgwin=24, stride=1),  # stride 1: no byte shuffle
}
"""The model compressor plugins at the shell's settings: they compress the bundle, and their
bounded decoders read a shell back (the shell itself calls the plain modules, with which their
streams are identical)."""
ORIGIN = "<pgolf-bundle>/train_gpt.py"
"""The file name the shell compiles the bundle under (not a real path: nothing is read from disk)."""

_LATIN1_HEAD = "# coding: latin-1\n"
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\0": "\\0"}
# NUL is written "\0" unless an octal digit follows (which would extend the escape): then "\x00".
_ESCAPE_RE = re.compile('[\\\\"\n\r]|\0(?![0-7])|(\0)')
_SHELL_RE = {
    "latin1": re.compile(
        r"\A# coding: latin-1\nimport (lzma|zlib|brotli);exec\(compile\(\1\.decompress\("
        r'"((?:[^"\\\n\r]|\\.)*)"\.encode\("latin-1"\)\),"[^"\n]*","exec"\)\)\n'
    ),
    "base85": re.compile(
        r'\Aimport (lzma|zlib|brotli),base64;exec\(compile\(\1\.decompress\(base64\.b85decode\("([^"]*)"\)\)'
    ),
}


def _codec(codec: str) -> Any:
    if codec not in _CODEC_CONFIGS:
        raise ValueError(f"unknown bundle codec {codec!r} (expected one of {', '.join(CODECS)})")
    return _CODEC_CONFIGS[codec]().build()


def compress(codec: str, data: bytes) -> bytes:
    """``data`` compressed by ``codec`` with the shell's settings."""
    return _codec(codec).compress(data)


_IMPORTS_BROTLI = re.compile(r"^\s*(?:import\s+brotli\b|from\s+brotli\s+import\b)", re.MULTILINE)


def shell_codecs(sources: Iterable[str]) -> tuple[str, ...]:
    """The codecs a bundle of ``sources`` may use: brotli only when one of them imports it."""
    return CODECS if any(_IMPORTS_BROTLI.search(src) for src in sources) else STDLIB_CODECS


def _latin1_literal(packed: bytes) -> str:
    return _ESCAPE_RE.sub(lambda m: "\\x00" if m.group(1) else _ESCAPES[m.group()], packed.decode("latin-1"))


def shell(codec: str, encoding: str, packed: bytes) -> bytes:
    """The file that runs the compressed bundle ``packed`` (its bytes as written to disk)."""
    if encoding == "latin1":
        text = (
            f"{_LATIN1_HEAD}import {codec};exec(compile({codec}.decompress("
            f'"{_latin1_literal(packed)}".encode("latin-1")),"{ORIGIN}","exec"))\n'
        )
        return text.encode("latin-1")
    if encoding == "base85":
        return (
            f"import {codec},base64;exec(compile({codec}.decompress("
            f'base64.b85decode("{base64.b85encode(packed).decode("ascii")}")),"{ORIGIN}","exec"))\n'
        ).encode("ascii")
    raise ValueError(f"unknown bundle encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")


@dataclass(frozen=True)
class Wrapped:
    """A shell: its bytes and the codec and encoding measurement chose."""

    data: bytes
    codec: str
    encoding: str


def wrap(text: str, encoding: str = "latin1", codecs: tuple[str, ...] = CODECS) -> Wrapped:
    """The smallest shell of ``text`` over ``codecs`` (ties keep the earlier codec)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown bundle encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
    raw = text.encode("utf-8")
    best: Wrapped | None = None
    for codec in codecs:
        data = shell(codec, encoding, compress(codec, raw))
        if best is None or len(data) < len(best.data):
            best = Wrapped(data, codec, encoding)
    if best is None:
        raise ValueError("wrap: no codec to try")
    return best


@dataclass(frozen=True)
class Unwrapped:
    """A shell read back: the bundle's text, and the shell's own text around the payload."""

    inner: str
    head: str
    tail: str
    codec: str
    encoding: str


def unwrap(data: bytes, limit: int, where: str = "train_gpt.py") -> Unwrapped | None:
    """The bundle inside the shell ``data``, or None when ``data`` is not one of our shells.
    At most ``limit`` bytes are decompressed; ``where`` names the file in errors. Nothing runs:
    the payload is a literal, read with `ast.literal_eval`."""
    encoding = "latin1" if data.startswith(_LATIN1_HEAD.encode("ascii")) else "base85"
    try:
        text = data.decode("latin-1" if encoding == "latin1" else "utf-8")
    except UnicodeDecodeError:
        return None
    match = _SHELL_RE[encoding].match(text)
    if match is None:
        return None
    codec = match.group(1)
    try:
        if encoding == "latin1":
            packed = ast.literal_eval(f'"{match.group(2)}"').encode("latin-1")
        else:
            packed = base64.b85decode(match.group(2))
        inner = _decompress(codec, packed, limit).decode("utf-8")
    except (ValueError, SyntaxError, UnicodeError) as exc:
        raise DataError(f"{where}: cannot unwrap the {codec}+{encoding} bundle ({exc})") from None
    return Unwrapped(inner, text[: match.start(2)], text[match.end(2) :], codec, encoding)


def _decompress(codec: str, packed: bytes, limit: int) -> bytes:
    """``packed`` decompressed by ``codec``: at most ``limit`` bytes, a ValueError when corrupt,
    truncated, followed by other bytes, or larger."""
    try:
        return _codec(codec).decompress(packed, limit)
    except ArtifactError as exc:
        raise ValueError(str(exc)) from None
