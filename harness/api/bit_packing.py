"""Bit-packed intN codes (kind ``intn_packed``): the packing and the kind's store and read.

Source: P1573's int5/int6 packing (`pack_int5`, `pack_int6` in
records/track_10min_16mb/2026-04-12_11L_4xMLP_RecycledCore_ParallelResid_Int5), a little-endian
bit stream where value k occupies bits k*b .. k*b+b-1, generalised to any width 1..8.
**Difference:** P1573 pads the stream to whole groups (8 int5 / 4 int6 values); here it is padded
to a whole byte only. The bytes agree whenever the count is a multiple of the group, which every
weight matrix is.

A module of its own because only some configurations pack their codes (``packed=True`` of the
``intn``, ``mixed`` and ``gptq`` quantizers: the P1573 recipes); the baseline int8, T1's one code
per byte and the int4 nibbles never do. `harness.api.quantization` reaches it by name
(`BIT_PACKING_MODULE`, declared by those configs' ``modules_by_name()``), as does
`harness.api.layout.read_symbols`, so a bundle whose quantizer never packs leaves it out
(pgolf issue 13). Compressors that code packed streams (``ans``) import it directly. The byte
count of a stream, `harness.api.quantization.packed_nbytes`, stays with the artifact layout,
which every run reads.
"""

from __future__ import annotations

import torch

from harness.api.errors import ArtifactError
from harness.api.protocols import QTensor
from harness.api.quantization import check_bits, clip_level, dtype_name, packed_nbytes


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers in 0..2**bits-1 (any shape, read flattened) -> 1-D uint8 little-endian bit stream.

    Value k lands in bits k*bits .. k*bits+bits-1 of the stream (bit 0 = least significant
    bit of byte 0); the last byte is zero-padded. 8 int5 values take 5 bytes, 4 int6 values 3.
    """
    check_bits(bits, 1, "pack_bits")
    if values.is_floating_point() or values.is_complex():
        raise ValueError(f"pack_bits: values must be integers, got {dtype_name(values.dtype)}")
    flat = values.detach().to("cpu").reshape(-1).to(torch.int64)
    top = (1 << bits) - 1
    bad = (flat < 0) | (flat > top)
    if bool(bad.any()):
        i = int(torch.argmax(bad.to(torch.uint8)))
        raise ValueError(
            f"pack_bits: value {int(flat[i])} at index {i} does not fit in {bits} bits (0..{top})"
        )
    n = flat.numel()
    if bits == 8:
        return flat.to(torch.uint8).contiguous()
    # Each group of 8 values is exactly `bits` bytes; a group's 8*bits <= 56 bits fit in an int64.
    groups = -(-n // 8)
    padded = torch.zeros(groups * 8, dtype=torch.int64)
    padded[:n] = flat
    word = (padded.view(groups, 8) << (torch.arange(8) * bits)).sum(dim=1)  # fields are disjoint
    out = (word[:, None] >> (torch.arange(bits) * 8)) & 0xFF  # (groups, bits) bytes, LSB first
    return out.to(torch.uint8).reshape(-1)[: packed_nbytes(n, bits)].contiguous()


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``count`` values (1-D uint8); extra bytes are ignored."""
    check_bits(bits, 1, "unpack_bits")
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_bits: packed must be uint8, got {dtype_name(packed.dtype)}")
    need = packed_nbytes(count, bits)
    flat = packed.detach().to("cpu").reshape(-1)
    if count < 0 or flat.numel() < need:
        raise ValueError(f"unpack_bits: {count} values of {bits} bits need {need} bytes, got {flat.numel()}")
    if bits == 8:
        return flat[:count].clone()
    groups = -(-count // 8)
    padded = torch.zeros(groups * bits, dtype=torch.int64)
    padded[:need] = flat[:need]
    word = (padded.view(groups, bits) << (torch.arange(bits) * 8)).sum(dim=1)
    vals = (word[:, None] >> (torch.arange(8) * bits)) & ((1 << bits) - 1)  # (groups, 8)
    return vals.reshape(-1)[:count].to(torch.uint8)


def store_packed(
    q: torch.Tensor, scale: torch.Tensor, bits: int, meta: dict, *, allow_extra_negative: bool
) -> QTensor:
    """Signed codes as an ``intn_packed`` tensor: q + offset as a ``pack_bits`` stream, the offset
    (-lowest level: c + 1 with ``allow_extra_negative``, else c) added to ``meta``."""
    offset = clip_level(bits) + 1 if allow_extra_negative else clip_level(bits)
    codes = pack_bits(q.to(torch.int16) + offset, bits)
    return QTensor("intn_packed", {"q": codes, "scale": scale}, {**meta, "offset": offset})


def packed_codes(name: str, qt: QTensor, q: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The signed codes of ``intn_packed`` tensor ``name`` (its ``q`` array), flattened;
    ArtifactError when the offset or the stream's size and dtype do not fit ``bits`` x ``numel``."""
    offset = qt.meta.get("offset")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 2**bits:
        raise ArtifactError(
            f"tensor {name}: meta.offset must be an integer in 0..{2**bits - 1}, got {offset!r}"
        )
    need = packed_nbytes(numel, bits)
    if q.dtype != torch.uint8 or tuple(q.shape) != (need,):
        raise ArtifactError(
            f"tensor {name}: intn_packed needs {need} uint8 bytes for {numel} {bits}-bit values, "
            f"got {list(q.shape)} {dtype_name(q.dtype)}"
        )
    return unpack_bits(q, bits, numel).to(torch.int16) - offset
