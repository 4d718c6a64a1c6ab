"""Recompress one artifact's raw payload with every codec and compare each with the order-0 bound.

Usage: ``python benchmarks/compression_table.py ARTIFACT_OR_RUN_DIR [--repeat N]``

Reads the artifact through `harness.pipeline.artifact` (validated, pickle-free), rebuilds the raw payload
(every array's bytes at its manifest offset), and times zlib-9, zstd-22, lzma-9 and the ``ans``
entropy coder (with the harness's symbol layout, per-array and per-class tables) on it: compress
and decompress seconds (best of ``--repeat``), each decompression checked byte for byte. Prints
a markdown table (bytes, seconds, ratio to the bound) and the per-class bounds of
`harness.pipeline.entropy_report`. The codec list mirrors what records ship (PITFALLS.md §4: zstd-22 for T1,
lzma-9 for PR #1573) plus the coder that reaches the bound.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.api.errors import PgolfError
from harness.api.layout import layout_from_manifest
from harness.api.quantization import host_bytes
from harness.pipeline.artifact import config_from_json, read_artifact
from harness.pipeline.entropy_report import EntropyReport, entropy_report
from harness.pipeline.plugin_manager import full_manager

# (label, registry name, config kwargs, pass the layout)
CODECS: tuple[tuple[str, str, dict, bool], ...] = (
    ("zlib-9", "zlib", {"level": 9}, False),
    ("zstd-22", "zstd", {"level": 22}, False),
    ("lzma-9", "lzma", {"preset": 9}, False),
    ("ans (per-array tables)", "ans", {}, True),
    ("ans (per-class tables)", "ans", {"own_table_min_symbols": 2**62}, True),
)


def find_artifact(path: Path) -> Path:
    """``path`` itself, or the one ``*.pgolf`` file in the run folder ``path``."""
    if path.is_dir():
        found = sorted(path.glob("*.pgolf"))
        if len(found) != 1:
            raise SystemExit(f"{path}: expected exactly one .pgolf artifact, found {len(found)}")
        return found[0]
    return path


def raw_payload(tensors: dict, manifest: dict) -> bytes:
    """The uncompressed payload: every array's bytes at the offset its manifest entry gives."""
    raw = bytearray(manifest["raw_bytes"])
    for name, entry in manifest["tensors"].items():
        for key, spec in entry["arrays"].items():
            raw[spec["offset"] : spec["offset"] + spec["nbytes"]] = host_bytes(
                tensors[name].arrays[key]
            ).tobytes()
    return bytes(raw)


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[Any, float]:
    """(result, best wall-clock seconds over ``repeat`` calls)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def measure(raw: bytes, layout: list, repeat: int) -> list[tuple[str, int, float, float]]:
    """(codec, payload bytes, compress s, decompress s) per codec; decompression verified."""
    registry = full_manager(entrypoints=False).registry
    rows = []
    for label, name, kwargs, with_layout in CODECS:
        codec = registry.get("compressor", name).config_cls(**kwargs).build()
        extra = {"layout": layout} if with_layout else {}
        payload, c_s = best_time(lambda codec=codec, extra=extra: codec.compress(raw, **extra), repeat)
        back, d_s = best_time(
            lambda codec=codec, payload=payload: codec.decompress(payload, len(raw)), repeat
        )
        if back != raw:
            raise SystemExit(f"{label}: decompression did not give back the raw payload")
        rows.append((label, len(payload), c_s, d_s))
    return rows


def markdown(rows: list[tuple[str, int, float, float]], rep: EntropyReport, raw_len: int) -> str:
    """The codec table, the bound line and the per-class bounds."""
    bound = rep.bound_bytes
    out = ["| codec | bytes | compress s | decompress s | ratio to bound |", "|---|---:|---:|---:|---:|"]
    out += [f"| {label} | {n:,} | {c:.2f} | {d:.2f} | {n / bound:.4f} |" for label, n, c, d in rows]
    out.append(f"| order-0 bound (sum over classes) | {bound:,.0f} | | | 1.0000 |")
    out.append(
        f"\nraw payload: {raw_len:,} bytes; shipped artifact file: {rep.compressed_bytes:,} bytes "
        f"(ratio {rep.ratio:.4f}, manifest and header included)\n"
    )
    out += ["| class | symbols | alphabet | bits/symbol | bound bytes |", "|---|---:|---:|---:|---:|"]
    out += [
        f"| {c.cls} | {c.symbols:,} | {c.alphabet} | {c.bits_per_symbol:.4f} | {c.bound_bytes:,.0f} |"
        for c in rep.classes
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path, help="a .pgolf artifact or a run folder holding one")
    parser.add_argument("--repeat", type=int, default=1, help="timing repeats (best is kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = find_artifact(args.artifact)
    registry = full_manager(entrypoints=False).registry
    try:
        tensors, manifest = read_artifact(
            path,
            compressor_for=lambda name, cfg: config_from_json(
                registry.get("compressor", name).config_cls, cfg, registry
            ).build(),
        )
    except PgolfError as exc:
        raise SystemExit(str(exc)) from None
    raw = raw_payload(tensors, manifest)
    rep = entropy_report(tensors, os.path.getsize(path))
    rows = measure(raw, layout_from_manifest(manifest["tensors"]), args.repeat)
    print(f"artifact: {path} (written with {manifest['quantizer']['name']}+{manifest['compressor']['name']})")
    print(
        f"machine: {platform.processor() or platform.machine()}, 1 torch thread, "
        f"python {sys.version.split()[0]}\n"
    )
    print(markdown(rows, rep, len(raw)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
