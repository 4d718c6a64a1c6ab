"""Export a ``conv_moe`` model to the ``.clm`` v0.2 byte layout, and read one back (kind
``callback``, name ``clm_export``).

Source: docs/formats.md §7, from dancinlab anima ``CLM/CLM_FORMAT_SPEC.md`` §2.1, the v0.2
writers (anima ``CLM/model/clm_serialize_v2.py``, hexa-lang ``stdlib/flame/clm_reexport.hexa``)
and the engine decoder (anima ``CORE/clm_decode.hexa``). Layout (little-endian u32, IEEE fp32)::

    "CLM\\x01"  u8 nblk
    nblk conv blocks, order ec, trunk convs, experts, router, readout; each:
        u32 cout, u32 rest (= Cin·K), ceil(cout·rest/2) B int4 codes, cout × fp32 scale
        codes: element i (even) LOW nibble, i+1 HIGH nibble, nibble = q+8, odd tail padded 8;
        element index c·rest + ci·K + k (a torch (Cout, Cin, K) weight flattened row-major)
    "CLMX"  u8 n_ext, n_ext × (u32 n, n × fp32):
        embed (V·d, row-major), ecB, tcB×L, eB×E, rB, roB, tgG×L, tgB×L, noG, noB

With one trunk layer and two experts (the published shape) this is exactly v0.2: nblk 6,
n_ext 11, and a d=768, V=256 model ends at byte 4,463,478 (trailer at 3,651,389). Other
shapes use the generalised ordering of the decoder's "v0.3" reader (E = cout of block nblk-2,
V = cout of the last block, L = nblk - E - 3); no version byte exists in either.

Weights are quantized here with the int4 per-output-channel rule of ``plugins/quant/int4.py``
(s_c = max|W_c|/7, 1 for a zero channel; q = clamp(round(W/s), -7, 7), torch's round-half-
to-even): the same arithmetic, copied because plugins never import each other, and a test
checks the two agree code for code.

Deliberate difference: our ``conv_moe`` normalises with a per-position LayerNorm (the causal
fix), the published model with GroupNorm over the whole window. The γ/β arrays have the same
shapes, so the file carries them in the tgG/tgB/noG/noB slots, but a v0.2 reader that runs
GroupNorm computes different (and future-leaking) outputs from them. ``read_clm`` returns the
tensors only; rebuilding with the right norm is the caller's choice.

The callback writes ``<run_dir>/<filename>`` in ``pg_report`` (after the artifact has been
written and scored), from the model's final weights, and reports ``clm_file``, ``clm_bytes``,
``clm_sha256`` and ``clm_matches_artifact`` (every tensor read back from the file equals what
the run's quantizer gives back from the artifact).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api.config import RunConfig
from harness.api.context import TrainContext
from harness.api.errors import ArtifactError, ConfigError
from harness.api.fileio import write_atomic
from harness.api.hooks import hookimpl
from harness.api.quantization import INT4_NIBBLE_OFFSET as NIBBLE_OFFSET
from harness.api.quantization import pack_nibbles, quantize_channels
from harness.api.registry import Registry

MAGIC = b"CLM\x01"
EXT_MAGIC = b"CLMX"
_U32 = struct.Struct("<I")
_MODEL_FIELDS = ("d_model", "experts", "kernel", "trunk_layers")


@dataclass(frozen=True, kw_only=True)
class ClmExportConfig:
    """Where the ``.clm`` export goes."""

    filename: str = "model.clm"
    """File name of the export inside the run folder."""

    def __post_init__(self) -> None:
        name = self.filename
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ConfigError(
                f"clm_export.filename: expected a plain file name (letters, digits, . _ -), got {name!r}"
            )

    def build(self) -> ClmExport:
        """The callback plugin object."""
        return ClmExport(self)


@dataclass(frozen=True)
class ClmLayout:
    """Shape of a CLMConvMoE as the file stores it."""

    d_model: int
    kernel: int
    trunk_layers: int
    experts: int
    vocab_size: int

    def conv_names(self) -> list[str]:
        """Block order: ec, trunk convs, experts, router, readout."""
        trunk = [f"trunk.{i}.conv.weight" for i in range(self.trunk_layers)]
        experts = [f"experts.{e}.weight" for e in range(self.experts)]
        return ["ec.weight", *trunk, *experts, "router.weight", "readout.weight"]

    def ext_names(self) -> list[str]:
        """Trailer order: embed, ecB, tcB×L, eB×E, rB, roB, tgG×L, tgB×L, noG, noB."""
        rng = range(self.trunk_layers)
        return [
            "embed.weight",
            "ec.bias",
            *[f"trunk.{i}.conv.bias" for i in rng],
            *[f"experts.{e}.bias" for e in range(self.experts)],
            "router.bias",
            "readout.bias",
            *[f"trunk.{i}.norm.weight" for i in rng],
            *[f"trunk.{i}.norm.bias" for i in rng],
            "out_norm.weight",
            "out_norm.bias",
        ]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape in the model's state dict."""
        d, k, v, e = self.d_model, self.kernel, self.vocab_size, self.experts
        out: dict[str, tuple[int, ...]] = {name: (d, d, k) for name in self.conv_names()}
        out.update({"router.weight": (e, d, 1), "readout.weight": (v, d, 1)})
        out.update({name: (d,) for name in self.ext_names()})
        out.update({"embed.weight": (v, d), "router.bias": (e,), "readout.bias": (v,)})
        return out


@dataclass(frozen=True)
class ClmInfo:
    """What ``write_clm`` wrote."""

    path: Path
    bytes: int
    sha256: str
    layout: ClmLayout


def layout_of(state_dict: dict[str, torch.Tensor]) -> ClmLayout:
    """The layout of a conv_moe state dict; ConfigError naming the first tensor that does not fit."""
    ec, ro = state_dict.get("ec.weight"), state_dict.get("readout.weight")
    if ec is None or ro is None or ec.ndim != 3:
        raise ConfigError(
            "clm_export: the state dict has no 3-D ec.weight and readout.weight; "
            "only conv_moe models can be exported"
        )
    layout = ClmLayout(
        d_model=int(ec.shape[0]),
        kernel=int(ec.shape[2]),
        trunk_layers=_count(state_dict, r"trunk\.\d+\.conv\.weight"),
        experts=_count(state_dict, r"experts\.\d+\.weight"),
        vocab_size=int(ro.shape[0]),
    )
    shapes = layout.shapes()
    for name, shape in shapes.items():
        got = tuple(state_dict[name].shape) if name in state_dict else None
        if got != shape:
            raise ConfigError(
                f"clm_export: tensor {name} has shape {got}, expected {shape} for layout {layout}"
            )
    extra = sorted(set(state_dict) - set(shapes))
    if extra:
        raise ConfigError(f"clm_export: the .clm layout has no place for {extra}")
    if len(layout.conv_names()) > 255 or len(layout.ext_names()) > 255:
        raise ConfigError(f"clm_export: {layout} needs more than 255 blocks or trailer entries (u8 counts)")
    return layout


def _count(state_dict: dict[str, torch.Tensor], pattern: str) -> int:
    return sum(1 for name in state_dict if re.fullmatch(pattern, name))


def int4_channels(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(Cout, ...) float -> (q int8 [Cout·rest] in -7..7, scale fp32 [Cout]): the int4 quantizer's rule."""
    if not bool(torch.isfinite(w.detach()).all()):
        raise ConfigError("clm_export: a conv weight holds NaN or infinite values")
    q, scale = quantize_channels(w.detach().to("cpu"))
    return q.reshape(-1).numpy(), scale.numpy()


def pack_codes(q: np.ndarray) -> bytes:
    """int codes -> bytes: element 2i low nibble, 2i+1 high nibble, nibble = q+8, odd tail padded 8."""
    return pack_nibbles(torch.from_numpy(np.asarray(q))).numpy().tobytes()


def encode_clm(state_dict: dict[str, torch.Tensor]) -> bytes:
    """The ``.clm`` bytes of a conv_moe state dict (float weights are quantized here)."""
    layout = layout_of(state_dict)
    out = bytearray(MAGIC)
    out.append(len(layout.conv_names()))
    for name in layout.conv_names():
        w = state_dict[name]
        q, scale = int4_channels(w)
        out += _U32.pack(w.shape[0]) + _U32.pack(q.size // max(w.shape[0], 1))
        out += pack_codes(q) + scale.astype("<f4").tobytes()
    out += EXT_MAGIC
    out.append(len(layout.ext_names()))
    for name in layout.ext_names():
        arr = state_dict[name].detach().to("cpu").float().reshape(-1).numpy()
        out += _U32.pack(arr.size) + arr.astype("<f4").tobytes()
    return bytes(out)


def write_clm(state_dict: dict[str, torch.Tensor], path: str | Path) -> ClmInfo:
    """Write ``encode_clm(state_dict)`` to ``path`` atomically; its size and sha256."""
    blob = encode_clm(state_dict)
    path = Path(path)
    write_atomic(path, blob)
    return ClmInfo(path, len(blob), hashlib.sha256(blob).hexdigest(), layout_of(state_dict))


class _Reader:
    """Bounds-checked cursor over a file's bytes; errors name the file and the offset."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ArtifactError(
                f"{self.path}: truncated at offset {self.pos}: "
                f"{what} needs {n} bytes, {len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def f32(self, n: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * n, what), dtype="<f4").astype(np.float32)


def _read_block(r: _Reader, index: int) -> np.ndarray:
    """One conv block -> dequantized fp32 [cout, rest]."""
    at = r.pos
    cout, rest = r.u32(f"block {index} cout"), r.u32(f"block {index} rest")
    n = cout * rest
    codes = np.frombuffer(r.take((n + 1) // 2, f"block {index} codes"), dtype=np.uint8)
    nib = np.stack([codes & 0xF, codes >> 4], axis=1).reshape(-1)[:n]
    if (nib == 0).any():
        raise ArtifactError(
            f"{r.path}: block {index} (offset {at}) holds code -8 (nibble 0); only -7..7 are valid"
        )
    scale = r.f32(cout, f"block {index} scales")
    q = nib.astype(np.float32) - NIBBLE_OFFSET
    return q.reshape(cout, rest) * scale[:, None]


def _layout_from_blocks(path: Path, blocks: list[np.ndarray]) -> ClmLayout:
    d = blocks[0].shape[0]
    experts, vocab = blocks[-2].shape[0], blocks[-1].shape[0]
    trunk = len(blocks) - experts - 3
    if d == 0 or blocks[0].shape[1] % d or trunk < 0:
        raise ArtifactError(
            f"{path}: block dims {[b.shape for b in blocks]} "
            "are not a CLMConvMoE (ec, trunk, experts, router, readout)"
        )
    return ClmLayout(
        d_model=d, kernel=blocks[0].shape[1] // d, trunk_layers=trunk, experts=experts, vocab_size=vocab
    )


def read_clm(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.clm`` file -> the conv_moe state dict it holds (conv weights dequantized, fp32)."""
    path = Path(path)
    r = _Reader(path, path.read_bytes())
    if r.take(4, "magic") != MAGIC:
        raise ArtifactError(f"{path}: not a .clm file (magic {r.data[:4]!r}, expected {MAGIC!r})")
    nblk = r.take(1, "nblk")[0]
    if nblk < 4:
        raise ArtifactError(
            f"{path}: nblk={nblk}; a CLMConvMoE has at least 4 conv blocks (ec, expert, router, readout)"
        )
    blocks = [_read_block(r, i) for i in range(nblk)]
    layout = _layout_from_blocks(path, blocks)
    if r.take(4, "CLMX trailer") != EXT_MAGIC:
        raise ArtifactError(
            f"{path}: no CLMX trailer at offset {r.pos - 4} (a v0.1 file: valid but not decodable)"
        )
    shapes = layout.shapes()
    names = layout.ext_names()
    n_ext = r.take(1, "n_ext")[0]
    if n_ext != len(names):
        raise ArtifactError(f"{path}: n_ext={n_ext}, expected {len(names)} for {layout}")
    state = {name: torch.from_numpy(b.copy()) for name, b in zip(layout.conv_names(), blocks, strict=True)}
    for name in names:
        n = r.u32(f"{name} length")
        state[name] = torch.from_numpy(r.f32(n, name).copy())
    if r.pos != len(r.data):
        raise ArtifactError(
            f"{path}: {len(r.data) - r.pos} unexpected bytes after the trailer (offset {r.pos})"
        )
    for name, shape in shapes.items():
        if state[name].numel() != int(np.prod(shape)):
            raise ArtifactError(f"{path}: {name} holds {state[name].numel()} values, expected shape {shape}")
        state[name] = state[name].reshape(shape)
    return state


class ClmExport:
    """Observer: writes the run's final model as ``.clm`` in ``pg_report`` and reports the file."""

    def __init__(self, cfg: ClmExportConfig) -> None:
        self.cfg = cfg

    @hookimpl
    def pg_report(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        """Write ``<run_dir>/<filename>``; add clm_file, clm_bytes, clm_sha256, clm_matches_artifact."""
        state = {k: v.detach().to("cpu").clone() for k, v in ctx.model.state_dict().items()}
        info = write_clm(state, Path(ctx.run_dir) / self.cfg.filename)
        quantizer = ctx.config.quantizer.build()
        artifact = quantizer.dequantize(quantizer.quantize(state))
        back = read_clm(info.path)
        matches = all(torch.equal(back[k], artifact[k].float()) for k in back)
        record.update(
            clm_file=info.path.name,
            clm_bytes=info.bytes,
            clm_sha256=info.sha256,
            clm_matches_artifact=matches,
        )
        ctx.log.log(
            f"clm_export:{info.path.name} bytes:{info.bytes} sha256:{info.sha256[:16]} "
            f"matches_artifact:{matches}",
            event="clm_export",
            bytes=info.bytes,
            sha256=info.sha256,
            matches_artifact=matches,
        )


@hookimpl
def pg_configure(run: RunConfig) -> None:
    """Refuse a run that lists ClmExportConfig for a model that is not a CLMConvMoE."""
    if not any(isinstance(p, ClmExportConfig) for p in run.plugins):
        return
    missing = [f for f in _MODEL_FIELDS if not hasattr(run.model, f)]
    if missing:
        raise ConfigError(
            f"plugins: clm_export writes CLMConvMoE models only, but model {type(run.model).__name__} "
            f"has no {', '.join(missing)} (use plugins.arch.conv_moe.ConvMoEConfig)"
        )


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``ClmExportConfig`` as the ``callback`` component ``clm_export``."""
    registry.register("callback", "clm_export", ClmExportConfig)
