"""Our artifact container against upstream's, at the naive baseline's full shape (CPU, minutes).

Usage: ``python benchmarks/container_vs_upstream.py [--codecs zlib,zstd,lzma] [--seed 0]``
(output committed as ``benchmarks/container_vs_upstream.txt``).

Builds the baseline submission's GPT (9 layers x 512, vocab 1024), fills every matrix with
seeded N(0, 0.02) values and every gain with 1 + N(0, 0.01) (so the int8 codes spread over many
levels, as trained ones do; an init's zero matrices would flatter every container), quantizes
with the baseline's ``int8`` quantizer and prints:

1. file sizes: upstream's ``torch.save`` + zlib-9 (`tests/unit/upstream_container.py`), our
   format 1 (plain JSON manifest, arrays by name) and format 2 (what `write_artifact` writes),
   with manifest bytes before and after;
2. manifest encodings: JSON with or without the derivable offsets and sizes, raw or zlib-9 or
   lzma-9;
3. payload orders x codecs: the raw payload in each candidate order, compressed. Format 2's
   order (`harness.pipeline.artifact_manifest.array_order`) was chosen from this table.
"""

from __future__ import annotations

import argparse
import lzma
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from harness.api.quantization import host_bytes
from harness.api.tensor_classes import tensor_class
from harness.pipeline.artifact import DIGEST_BYTES, config_to_json, read_manifest, write_artifact
from harness.pipeline.artifact_manifest import array_order, encode_manifest
from plugins.compress.zlib import ZlibConfig
from plugins.quant.int8 import Int8Config

ROOT = Path(__file__).resolve().parents[1]
HEADER = struct.Struct("<8sHI")  # docs/formats.md §2.1: magic, version, manifest length
sys.path[:0] = [str(ROOT), str(ROOT / "submissions" / "baseline")]
from train_gpt import build_config  # noqa: E402

from tests.unit.upstream_container import trained_like, upstream_container_bytes  # noqa: E402


def baseline_state(seed: int) -> dict[str, torch.Tensor]:
    """The baseline GPT's state dict with seeded trained-like values (see the docstring)."""
    return trained_like(build_config().model.build(1024).state_dict(), seed)


def codec(name: str) -> Callable[[bytes], bytes]:
    if name == "zlib":
        return lambda b: zlib.compress(b, 9)
    if name == "lzma":
        return lambda b: lzma.compress(b, preset=9)
    if name == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=22).compress
    raise SystemExit(f"--codecs: unknown codec {name!r} (zlib, zstd, lzma)")


def orders(entries: dict, sd_order: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """Candidate payload orders of the manifest ``entries`` (name, key pairs)."""
    pairs = array_order(entries, 1)

    def role(p: tuple[str, str]) -> int:
        cls = tensor_class(p[0], entries[p[0]]["kind"], p[1])
        return 1 if cls == "scales" else 2 if cls == "float" else 0

    spec = {p: entries[p[0]]["arrays"][p[1]] for p in pairs}
    return {
        "by name, codes next to scales (format 1)": pairs,
        "role (codes, scales, rest), name (format 2)": array_order(entries, 2),
        "role, state-dict order (upstream's)": sorted(pairs, key=lambda p: (role(p), sd_order[p[0]], p[1])),
        "role, shape, name": sorted(pairs, key=lambda p: (role(p), spec[p]["shape"], p)),
        "dtype, name": sorted(pairs, key=lambda p: (spec[p]["dtype"], p)),
        "size (largest first), name": sorted(pairs, key=lambda p: (-spec[p]["nbytes"], p)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codecs", default="zlib,zstd,lzma", help="codecs of table 3 (zlib, zstd, lzma)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    state = baseline_state(args.seed)
    cfg, zcfg = Int8Config(), ZlibConfig(level=9)
    qtensors = cfg.build().quantize(state)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.pgolf"
        info = write_artifact(
            path,
            qtensors,
            quantizer_name="int8",
            quantizer_config=config_to_json(cfg),
            compressor=zcfg.build(),
            compressor_name="zlib",
            compressor_config=config_to_json(zcfg),
            extras={
                "arch": "gpt",
                "arch_config": config_to_json(build_config().model),
                "vocab_size": 1024,
                "harness_version": "0.1.0",
            },
        )
        manifest = read_manifest(path)
        stored_v2 = HEADER.unpack_from(path.read_bytes())[2]
    entries = manifest["tensors"]
    arrays = {(n, k): host_bytes(qtensors[n].arrays[k]).tobytes() for n, k in array_order(entries, 1)}
    v1_manifest = encode_manifest({**manifest, "format": "pgolf-artifact/1"}, version=1)
    v1_payload = zlib.compress(b"".join(arrays[p] for p in array_order(entries, 1)), 9)
    v1_bytes = HEADER.size + len(v1_manifest) + DIGEST_BYTES + len(v1_payload)
    upstream = upstream_container_bytes(state, qtensors)
    params = sum(t.numel() for t in state.values())
    print(
        f"# Container vs upstream: baseline shape (9x512, vocab 1024, {params:,} parameters), int8 + zlib-9"
    )
    print(f"# seed {args.seed}, torch {torch.__version__}, {os.cpu_count()} CPUs\n")
    print("| file | bytes | vs upstream | manifest bytes |")
    print("|---|---:|---:|---:|")
    for label, size, mbytes in (
        ("upstream torch.save + zlib-9", upstream, None),
        ("pgolf format 1 (before)", v1_bytes, len(v1_manifest)),
        ("pgolf format 2 (written now)", info.bytes_on_disk, stored_v2),
    ):
        mtext = "-" if mbytes is None else f"{mbytes:,}"
        print(f"| {label} | {size:,} | {size - upstream:+,} | {mtext} |")

    derived_free = encode_manifest(manifest, version=2)
    plain = {
        "JSON with offsets, nbytes (format 1)": v1_manifest,
        "JSON without them": zlib.decompress(derived_free),
    }
    print("\n| manifest encoding | raw | zlib-9 | lzma-9 |")
    print("|---|---:|---:|---:|")
    for label, text in plain.items():
        zl, xz = len(zlib.compress(text, 9)), len(lzma.compress(text, preset=9))
        print(f"| {label} | {len(text):,} | {zl:,} | {xz:,} |")

    names = [c for c in args.codecs.split(",") if c]
    print("\n| payload order | " + " | ".join(f"{c} bytes" for c in names) + " |")
    print("|---|" + "---:|" * len(names))
    sd_order = {n: i for i, n in enumerate(state)}
    for label, order in orders(entries, sd_order).items():
        raw = b"".join(arrays[p] for p in order)
        sizes = [len(codec(c)(raw)) for c in names]
        print(f"| {label} | " + " | ".join(f"{s:,}" for s in sizes) + " |", flush=True)


if __name__ == "__main__":
    main()
