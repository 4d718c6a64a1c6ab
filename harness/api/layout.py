"""The symbol layout of an artifact's raw payload: which bytes hold which array, in which
tensor class, and how to read its symbols (bit-packed integer codes, or bytes).

A compressor that implements `harness.api.protocols.LayoutAwareCompressor` receives this
layout from the artifact writer (an entropy coder codes int5 codes, not the bytes they are
packed in); `harness.pipeline.entropy_report` reads the same layout to compute the order-0
bound. A packed stream is read as codes only when re-packing the codes gives back its exact
bytes; otherwise it counts as bytes. The classes are `harness.api.tensor_classes`'.

The artifact writer imports this module by name (`harness.api.by_name.LAYOUT_MODULE`), only for
a compressor that reads the layout: a bundle whose compressor does not ships none of it (pgolf
issue 13).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from harness.api.by_name import import_by_name
from harness.api.quantization import BIT_PACKING_MODULE, packed_nbytes
from harness.api.tensor_classes import tensor_class


@dataclass(frozen=True)
class Segment:
    """One array of the raw payload and how to read its symbols.

    ``bits`` 8: one symbol per byte (``count == nbytes``); 1..7: a
    `harness.api.bit_packing.pack_bits` stream of ``count`` values
    (``nbytes == packed_nbytes(count, bits)``).
    """

    offset: int
    nbytes: int
    bits: int
    count: int
    cls: str
    name: str = ""


def reading(kind: str, meta: Mapping, key: str, nbytes: int) -> tuple[int, int]:
    """(bits, count) of an array: packed codes for ``intn_packed`` and int4 nibbles, else bytes."""
    if kind == "int4_channel" and key == "codes":
        return 4, 2 * nbytes  # the odd tail's pad nibble is a symbol too, so bytes re-pack exactly
    if kind == "intn_packed" and key == "q":
        bits, shape = meta.get("bits"), meta.get("shape")
        if (
            type(bits) is int
            and 1 <= bits < 8
            and isinstance(shape, list)
            and all(type(d) is int and d >= 0 for d in shape)
        ):
            count = math.prod(shape)
            if packed_nbytes(count, bits) == nbytes:
                return bits, count
    return 8, nbytes


def layout_from_manifest(entries: Mapping[str, Mapping]) -> list[Segment]:
    """Segments of the raw payload from a manifest's ``tensors``, in payload (offset) order."""
    segments = []
    for name in sorted(entries):
        entry = entries[name]
        for key in sorted(entry["arrays"]):
            spec = entry["arrays"][key]
            bits, count = reading(entry["kind"], entry["meta"], key, spec["nbytes"])
            cls = tensor_class(name, entry["kind"], key)
            segments.append(Segment(spec["offset"], spec["nbytes"], bits, count, cls, f"{name}.{key}"))
    return sorted(segments, key=lambda s: s.offset)


def read_symbols(buf: np.ndarray, bits: int, count: int) -> np.ndarray | None:
    """The uint8 symbols of ``buf`` (uint8 bytes) read as ``bits``-bit codes; None when the
    codes do not re-pack to exactly ``buf`` (then the bytes themselves are the symbols)."""
    if bits == 8:
        return buf
    if packed_nbytes(count, bits) != buf.size:
        return None
    packed = torch.from_numpy(buf)
    # By name: a run whose quantizer never packs does not ship the packing (pgolf issue 13).
    packing = import_by_name(BIT_PACKING_MODULE)
    codes = packing.unpack_bits(packed, bits, count)
    return codes.numpy() if torch.equal(packing.pack_bits(codes, bits), packed) else None
