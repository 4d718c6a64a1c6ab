"""Order-0 entropy of an artifact's quantized symbols, per tensor class (the symbol layout
itself is `harness.api.layout`).

Idea: Shannon's source-coding bound. A compressor that sees each symbol alone (no context)
cannot beat sum over classes of n_c * H_c bits, H_c being the empirical entropy of class c's
symbol counts; a measurement on one-byte-per-symbol int6 weights put zstd-22 at +0.85 % and
lzma-9 at +2.6 % above it, and bit-packing (PR #1573's int5 export) costs LZ codecs about 8 %
more (docs/techniques.md §9.5, docs/pitfalls.md §13). The report says how far the shipped
artifact is from that bound.

Symbols: the integer codes of quantized weights (packed bit streams are unpacked with
`harness.api.bit_packing.unpack_bits`; int8 codes are read as their byte images, which has the same
entropy), and for everything else (scales, passthrough floats, arrays of unknown kinds) the
raw bytes as byte symbols. Classes, fixed:

* ``embed``, ``attn``, ``mlp``, ``other_quant``: codes of quantized weights, by the tensor's
  name (``emb`` / ``attn`` / ``mlp`` in it, in that order; anything else is ``other_quant``);
* ``scales``: the step arrays of quantized tensors (bytes);
* ``float``: passthrough tensors and every array of a kind not listed in ``CODE_ARRAYS``.

The same reading is the layout hint handed to compressors that accept one
(`harness.pipeline.artifact.write_artifact`, `Segment`). A packed stream is read as codes only when
re-packing the codes gives back its exact bytes; otherwise it counts as bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from harness.api.layout import read_symbols, reading
from harness.api.protocols import QTensor
from harness.api.quantization import host_bytes
from harness.api.tensor_classes import CLASSES, tensor_class


def order0_bits(counts: np.ndarray) -> float:
    """n * H: the empirical order-0 entropy of a histogram, in bits (0 for 0 or 1 symbol)."""
    c = counts[counts > 0].astype(np.float64)
    n = c.sum()
    return float(-(c * np.log2(c / n)).sum()) if n else 0.0


def class_histograms(tensors: Mapping[str, QTensor]) -> dict[str, np.ndarray]:
    """Per class, the 256-bin histogram of its symbols (classes without symbols are left out)."""
    hists: dict[str, np.ndarray] = {}
    for cls, symbols in _symbol_streams(tensors):
        hist = hists.setdefault(cls, np.zeros(256, dtype=np.int64))
        hist += np.bincount(symbols, minlength=256)
    return {c: hists[c] for c in CLASSES if c in hists}


def _symbol_streams(tensors: Mapping[str, QTensor]) -> Iterator[tuple[str, np.ndarray]]:
    for name in sorted(tensors):
        qt = tensors[name]
        for key in sorted(qt.arrays):
            buf = host_bytes(qt.arrays[key])
            bits, count = reading(qt.kind, qt.meta, key, buf.size)
            symbols = read_symbols(buf, bits, count)
            yield tensor_class(name, qt.kind, key), buf if symbols is None else symbols


@dataclass(frozen=True)
class ClassEntropy:
    """Order-0 statistics of one class: symbol count, distinct symbols, H and n*H/8."""

    cls: str
    symbols: int
    alphabet: int
    bits_per_symbol: float
    bound_bytes: float


@dataclass(frozen=True)
class EntropyReport:
    """Per-class bounds, their sum, and the artifact's size on disk against it."""

    classes: tuple[ClassEntropy, ...]
    compressed_bytes: int

    @property
    def bound_bytes(self) -> float:
        """Sum of the per-class bounds (each class has its own symbol table)."""
        return sum(c.bound_bytes for c in self.classes)

    @property
    def ratio(self) -> float:
        """compressed_bytes / bound_bytes (inf for an empty bound)."""
        return self.compressed_bytes / self.bound_bytes if self.bound_bytes else math.inf

    def log_lines(self, coded: Mapping[str, int] | None = None) -> list[str]:
        """One ``entropy class:...`` line per class and an ``entropy total`` line."""
        lines = []
        for c in self.classes:
            extra = f" coded_bytes:{coded[c.cls]}" if coded and c.cls in coded else ""
            lines.append(
                f"entropy class:{c.cls} symbols:{c.symbols} alphabet:{c.alphabet} "
                f"bits_per_symbol:{c.bits_per_symbol:.4f} bound_bytes:{c.bound_bytes:.0f}{extra}"
            )
        symbols = sum(c.symbols for c in self.classes)
        lines.append(
            f"entropy total symbols:{symbols} bound_bytes:{self.bound_bytes:.0f} "
            f"compressed_bytes:{self.compressed_bytes} ratio:{self.ratio:.4f}"
        )
        return lines

    def as_record(self, coded: Mapping[str, int] | None = None) -> dict:
        """The report as a JSON-ready dict (``submission.json`` key ``entropy``)."""
        classes = {}
        for c in self.classes:
            row = {
                "symbols": c.symbols,
                "alphabet": c.alphabet,
                "bits_per_symbol": round(c.bits_per_symbol, 6),
                "bound_bytes": round(c.bound_bytes, 1),
            }
            if coded and c.cls in coded:
                row["coded_bytes"] = coded[c.cls]
            classes[c.cls] = row
        return {
            "classes": classes,
            "bound_bytes": round(self.bound_bytes, 1),
            "compressed_bytes": self.compressed_bytes,
            "ratio": round(self.ratio, 6),
        }


def entropy_report(tensors: Mapping[str, QTensor], compressed_bytes: int) -> EntropyReport:
    """The order-0 report of quantized ``tensors`` whose artifact takes ``compressed_bytes``."""
    classes = []
    for cls, hist in class_histograms(tensors).items():
        n, bits = int(hist.sum()), order0_bits(hist)
        classes.append(ClassEntropy(cls, n, int((hist > 0).sum()), bits / n if n else 0.0, bits / 8))
    return EntropyReport(tuple(classes), compressed_bytes)
