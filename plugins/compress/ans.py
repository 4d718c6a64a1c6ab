"""Order-0 entropy coder: rANS over the artifact's quantized symbols (the ``constriction`` package).

Idea: asymmetric numeral systems (Duda et al., PCS 2015), one static categorical model per symbol
table (an order-0 ANS coder reaches the order-0 bound, docs/pitfalls.md §13), as in the
per-tensor order-0 coder of the comma compression challenge's PR #136. Library:
``constriction.stream.stack.AnsCoder`` (32-bit words, 24-bit probabilities) with
``stream.model.Categorical``, imported at build time.

With the harness's layout hint (`harness.pipeline.entropy_report.Segment`) each array is coded as symbols:
packed int5 streams as 5-bit codes (re-packed with `harness.api.bit_packing.pack_bits` on decode; a stream
whose codes do not re-pack exactly is coded as bytes), everything else as bytes. Arrays of at least
``own_table_min_symbols`` symbols get their own frequency table, smaller ones share their class's;
a one-symbol table costs no coded bits. Without a layout the input is one byte stream.

Payload (LEB128 varints unless noted): ``b"ANS1"``, raw length, table count; per table: bits
(u8), a bitmap of the present symbols (2**bits bits, LSB first) and, with several symbols, their
frequencies (sum 2**24); segment count; per segment: table index, symbol count; word count; the
coded u32 words (little-endian). Decoding checks every field, the raw length against
``max_output_size`` before allocating, and that the coded stream is used up exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from harness.api.bit_packing import pack_bits
from harness.api.errors import ArtifactError, ConfigError
from harness.api.hooks import hookimpl
from harness.api.layout import Segment, read_symbols
from harness.api.quantization import packed_nbytes
from harness.api.registry import Registry

MAGIC = b"ANS1"
PRECISION = 24  # constriction's default ANS coder quantizes probabilities to 24 bits
_TOTAL = 1 << PRECISION
_CHUNK = 1 << 20  # symbols decoded at once (a multiple of 8, so packed chunks end on a byte)


def _constriction() -> ModuleType:
    try:
        import constriction
    except ImportError:
        raise ConfigError(
            "compressor ans needs the 'constriction' package: pip install constriction"
        ) from None
    return constriction


@dataclass(frozen=True, kw_only=True)
class AnsConfig:
    """Settings of the order-0 ANS entropy coder."""

    own_table_min_symbols: int = 65_536
    """Arrays with at least this many symbols get their own frequency table; smaller ones share
    one table per tensor class (a value above every array's size gives the per-class tables the
    order-0 bound of `harness.pipeline.entropy_report` assumes)."""

    def __post_init__(self) -> None:
        n = self.own_table_min_symbols
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"ans own_table_min_symbols: expected an integer >= 1, got {n!r}")

    def build(self) -> Ans:
        """The compressor these settings describe; ConfigError without ``constriction``."""
        return Ans(self.own_table_min_symbols, _constriction())


@dataclass
class _Table:
    bits: int
    present: np.ndarray  # sorted symbol values (uint8)
    freqs: np.ndarray  # int64, sum _TOTAL; unused when one symbol is present


class Ans:
    """Order-0 rANS over layout-aware symbol streams (see the module docstring)."""

    name = "ans"

    def __init__(self, own_table_min_symbols: int, module: ModuleType) -> None:
        self.own_table_min_symbols = own_table_min_symbols
        self._c = module
        self._coded: dict[str, int] = {}

    def compress(self, data: bytes, layout: Sequence[Segment] | None = None) -> bytes:
        """``data`` entropy-coded; ``layout`` says how to read its symbols (None: as bytes)."""
        raw = np.frombuffer(bytearray(data), dtype=np.uint8)
        segs = _normalize(layout, raw.size)
        streams = []
        for seg in segs:
            buf = raw[seg.offset : seg.offset + seg.nbytes]
            symbols = read_symbols(buf, seg.bits, seg.count)
            streams.append((seg.cls, 8, buf) if symbols is None else (seg.cls, seg.bits, symbols))
        tables, table_of = self._tables(streams)
        words = self._encode(streams, tables, table_of)
        parts = [
            MAGIC,
            _varint(raw.size),
            _varint(len(tables)),
            *map(_table_bytes, tables),
            _varint(len(streams)),
        ]
        parts += [_varint(tid) + _varint(s[2].size) for tid, s in zip(table_of, streams, strict=True)]
        parts += [_varint(words.size), words.astype("<u4").tobytes()]
        return b"".join(parts)

    def coded_class_bytes(self) -> dict[str, int]:
        """Bytes the last ``compress`` coded per tensor class (tables and framing excluded)."""
        return dict(self._coded)

    def _tables(self, streams: list[tuple[str, int, np.ndarray]]) -> tuple[list[_Table], list[int]]:
        """Frequency tables and each stream's table: own table for long streams, else per (class, bits)."""
        hists: list[tuple[int, np.ndarray]] = []
        key_of: dict[object, int] = {}
        table_of = []
        for i, (cls, bits, symbols) in enumerate(streams):
            key = i if symbols.size >= self.own_table_min_symbols else (cls, bits)
            if key not in key_of:
                key_of[key] = len(hists)
                hists.append((bits, np.zeros(256, dtype=np.int64)))
            table_of.append(key_of[key])
            hists[key_of[key]][1][:] += np.bincount(symbols, minlength=256)
        tables = [_quantize(bits, hist) for bits, hist in hists]
        return tables, table_of

    def _encode(self, streams: list, tables: list[_Table], table_of: list[int]) -> np.ndarray:
        """One ANS stack for everything; pushed last segment first so decoding runs forward."""
        models = [self._model(t) for t in tables]
        coder = self._c.stream.stack.AnsCoder()
        coded: dict[str, int] = {}
        for (cls, _bits, symbols), tid in zip(reversed(streams), reversed(table_of), strict=True):
            if models[tid] is None or symbols.size == 0:
                continue  # a one-symbol table carries no information
            index = np.full(256, -1, dtype=np.int32)
            index[tables[tid].present] = np.arange(tables[tid].present.size, dtype=np.int32)
            before = coder.num_valid_bits()
            coder.encode_reverse(index[symbols], models[tid])
            coded[cls] = coded.get(cls, 0) + coder.num_valid_bits() - before
        self._coded = {cls: (bits + 7) // 8 for cls, bits in coded.items()}
        return coder.get_compressed()

    def _model(self, table: _Table) -> Any:
        probs = table.freqs.astype(np.float64) / _TOTAL
        return self._c.stream.model.Categorical(probs, perfect=False) if table.present.size > 1 else None

    def decompress(self, data: bytes, max_output_size: int) -> bytes:
        """The exact bytes ``compress`` was given; at most ``max_output_size`` of them."""
        r = _Reader(bytes(data))
        if r.take(len(MAGIC)) != MAGIC:
            raise ArtifactError(f"ans payload: bad magic (expected {MAGIC!r})")
        raw_len = r.varint("raw length")
        if raw_len > max_output_size:
            raise ArtifactError(
                f"ans payload declares {raw_len} bytes, more than the bound {max_output_size}"
            )
        tables = [_read_table(r, i) for i in range(r.count("table count"))]
        segs = _read_segments(r, tables, raw_len)
        n_words = r.varint("word count")
        if n_words * 4 != r.remaining():
            raise ArtifactError(
                f"ans payload: {n_words} coded words need {n_words * 4} bytes, {r.remaining()} remain"
            )
        words = np.frombuffer(r.take(n_words * 4), dtype="<u4").astype(np.uint32)
        return self._decode(words, tables, segs, raw_len)

    def _decode(
        self, words: np.ndarray, tables: list[_Table], segs: list[tuple[int, int]], raw_len: int
    ) -> bytes:
        try:
            coder = self._c.stream.stack.AnsCoder(words)
            models = [self._model(t) for t in tables]
            out, pos = bytearray(raw_len), 0
            for tid, count in segs:
                for chunk in _decode_segment(coder, models[tid], tables[tid], count):
                    out[pos : pos + len(chunk)] = chunk
                    pos += len(chunk)
            empty = coder.is_empty()
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise ArtifactError(f"ans payload is corrupt: the coder failed: {exc}") from None
        if not empty or pos != raw_len:
            raise ArtifactError(
                "ans payload is corrupt: the coded stream does not decode to the declared symbols"
            )
        return bytes(out)


def _decode_segment(coder: Any, model: Any, table: _Table, count: int) -> Any:
    """The bytes of one segment, in chunks of at most ``_CHUNK`` symbols."""
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        symbols = (
            np.full(n, table.present[0], dtype=np.uint8)
            if model is None
            else table.present[coder.decode(model, n)]
        )
        yield (
            symbols.tobytes()
            if table.bits == 8
            else pack_bits(torch.from_numpy(symbols), table.bits).numpy().tobytes()
        )


def _normalize(layout: Sequence[Segment] | None, size: int) -> list[Segment]:
    """The layout sorted, checked, with uncovered bytes as byte segments; empty ones dropped."""
    segs: list[Segment] = []
    pos = 0
    for seg in sorted((s for s in layout or () if s.nbytes != 0), key=lambda s: s.offset):
        _check_segment(seg, size)
        if seg.offset < pos:
            raise ArtifactError(f"ans layout: segment {seg.name or seg.offset} overlaps the one before it")
        if seg.offset > pos:
            segs.append(Segment(pos, seg.offset - pos, 8, seg.offset - pos, "float", "gap"))
        segs.append(seg)
        pos = seg.offset + seg.nbytes
    if pos < size:
        segs.append(Segment(pos, size - pos, 8, size - pos, "float" if layout else "bytes", "tail"))
    return [s for s in segs if s.nbytes]


def _check_segment(seg: Segment, size: int) -> None:
    fields = (seg.offset, seg.nbytes, seg.bits, seg.count)
    if not all(type(v) is int and v >= 0 for v in fields) or not 1 <= seg.bits <= 8:
        raise ArtifactError(
            f"ans layout: segment {seg.name!r} has bad fields {fields} (offset, nbytes, bits 1..8, count)"
        )
    if seg.offset + seg.nbytes > size:
        raise ArtifactError(
            f"ans layout: segment {seg.name!r} ends at {seg.offset + seg.nbytes}, "
            f"past the data ({size} bytes)"
        )
    need = seg.count if seg.bits == 8 else packed_nbytes(seg.count, seg.bits)
    if need != seg.nbytes:
        raise ArtifactError(
            f"ans layout: segment {seg.name!r}: {seg.count} {seg.bits}-bit symbols "
            f"take {need} bytes, not {seg.nbytes}"
        )


def _quantize(bits: int, hist: np.ndarray) -> _Table:
    """Counts -> frequencies summing to 2**24, every present symbol at least 1."""
    present = np.flatnonzero(hist).astype(np.uint8)
    counts = hist[present]
    freqs = np.maximum(1, np.round(counts * (_TOTAL / max(int(counts.sum()), 1)))).astype(np.int64)
    # Rounding leaves the sum off by at most the alphabet size: the commonest symbol absorbs it.
    if freqs.size:
        freqs[np.argmax(counts)] += _TOTAL - int(freqs.sum())
    return _Table(bits, present, freqs)


def _table_bytes(t: _Table) -> bytes:
    mask = np.isin(np.arange(1 << t.bits), t.present).astype(np.uint8)
    head = bytes([t.bits]) + np.packbits(mask, bitorder="little").tobytes()
    return head + (b"".join(_varint(int(f)) for f in t.freqs) if t.present.size > 1 else b"")


def _read_table(r: _Reader, i: int) -> _Table:
    bits = r.take(1)[0]
    if not 1 <= bits <= 8:
        raise ArtifactError(f"ans payload: table {i} has bits {bits}, expected 1..8")
    mask = np.unpackbits(np.frombuffer(r.take(((1 << bits) + 7) // 8), dtype=np.uint8), bitorder="little")
    present = np.flatnonzero(mask[: 1 << bits]).astype(np.uint8)
    if present.size == 0:
        raise ArtifactError(f"ans payload: table {i} has no symbols")
    freqs = np.array(
        [r.varint(f"table {i} frequency") for _ in range(present.size)] if present.size > 1 else [_TOTAL],
        dtype=np.int64,
    )
    if int(freqs.min()) < 1 or int(freqs.sum()) != _TOTAL:
        raise ArtifactError(f"ans payload: table {i} frequencies must be >= 1 and sum to 2**{PRECISION}")
    return _Table(bits, present, freqs)


def _read_segments(r: _Reader, tables: list[_Table], raw_len: int) -> list[tuple[int, int]]:
    """(table, count) per segment; their byte sizes must add up to ``raw_len``."""
    segs, total = [], 0
    for i in range(r.count("segment count")):
        tid, count = r.varint(f"segment {i} table"), r.varint(f"segment {i} count")
        if tid >= len(tables):
            raise ArtifactError(f"ans payload: segment {i} names table {tid}, only {len(tables)} exist")
        bits = tables[tid].bits
        total += count if bits == 8 else packed_nbytes(count, bits)
        if total > raw_len:
            raise ArtifactError(f"ans payload: segments hold more than the declared {raw_len} bytes")
        segs.append((tid, count))
    if total != raw_len:
        raise ArtifactError(f"ans payload: segments hold {total} bytes, the header declares {raw_len}")
    return segs


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _Reader:
    """Bounds-checked reads of the payload header."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.remaining():
            raise ArtifactError(f"ans payload is truncated (needs {n} more bytes at offset {self.pos})")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def varint(self, what: str) -> int:
        value = 0
        for shift in range(0, 64, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise ArtifactError(f"ans payload: {what} is not a valid varint")

    def count(self, what: str) -> int:
        """A repeat count; each repeat takes at least one byte, so more than remain is corrupt."""
        n = self.varint(what)
        if n > self.remaining():
            raise ArtifactError(f"ans payload: {what} {n} exceeds the {self.remaining()} bytes left")
        return n


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``ans`` as a compressor."""
    registry.register("compressor", "ans", AnsConfig)
