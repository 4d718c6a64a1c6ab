"""Export and load throughput for every registered quantizer x compressor pair: quantize +
compress + write the artifact file, and read + decompress + dequantize it, exactly through
`harness.pipeline.artifact` as the runner does.

The state dict has the shapes of the baseline GPT at 2 layers x 256 (vocabulary 1024, about
1.2M parameters) filled with seeded N(0, 0.02) values, so every quantizer sees matrices above
its keep-as-float size.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.pipeline.artifact import config_to_json, load_state_dict, write_artifact
from harness.pipeline.plugin_manager import full_manager
from harness.pipeline.submission import build_submission_config
from harness.tools.bench import shrink_config
from tests.benchmarks.conftest import ROOT, adaptive_rounds, median_s

REGISTRY = full_manager(entrypoints=False).registry
PAIRS = [(q, c) for q in REGISTRY.names("quantizer") for c in REGISTRY.names("compressor")]


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    config = shrink_config(build_submission_config(ROOT / "submissions" / "baseline"), width=256)
    shapes = {k: v.shape for k, v in config.model.build(config.data.vocab_size).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in shapes.items()}


def _write(path: Path, state: dict[str, torch.Tensor], qname: str, cname: str) -> Any:
    qcfg, ccfg = REGISTRY.get("quantizer", qname).config_cls(), REGISTRY.get("compressor", cname).config_cls()
    return write_artifact(
        path,
        qcfg.build().quantize(state),
        quantizer_name=qname,
        quantizer_config=config_to_json(qcfg),
        compressor=ccfg.build(),
        compressor_name=cname,
        compressor_config=config_to_json(ccfg),
    )


def _info(state: dict[str, torch.Tensor], qname: str, cname: str) -> dict[str, Any]:
    return {
        "quantizer": qname,
        "compressor": cname,
        "params": sum(v.numel() for v in state.values()),
        "float32_bytes": 4 * sum(v.numel() for v in state.values()),
    }


@pytest.mark.benchmark(group="quantize_compress")
@pytest.mark.parametrize(("qname", "cname"), PAIRS)
def test_quantize_compress(
    bench: Any, tmp_path: Path, state: dict[str, torch.Tensor], qname: str, cname: str
) -> None:
    counter = itertools.count()
    infos = []

    def setup() -> tuple[tuple, dict]:
        return (
            tmp_path / f"a{next(counter)}.pgolf",
        ), {}  # a new file per round: artifacts are never replaced

    def run(path: Path) -> None:
        infos.append(_write(path, state, qname, cname))

    t0 = time.perf_counter()
    run(*setup()[0])  # warm-up, and it sizes the number of rounds
    bench.extra_info.update(_info(state, qname, cname))
    bench.pedantic(run, setup=setup, rounds=adaptive_rounds(time.perf_counter() - t0), iterations=1)
    info = infos[-1]
    bench.extra_info.update(bytes_on_disk=info.bytes_on_disk, raw_bytes=info.raw_bytes)
    median = median_s(bench)
    if median is not None:
        bench.extra_info["float32_mb_per_s"] = bench.extra_info["float32_bytes"] / median / 1e6
    assert len({i.sha256 for i in infos}) == 1  # the same tensors always give the same file


@pytest.mark.benchmark(group="decompress_dequantize")
@pytest.mark.parametrize(("qname", "cname"), PAIRS)
def test_decompress_dequantize(
    bench: Any, tmp_path: Path, state: dict[str, torch.Tensor], qname: str, cname: str
) -> None:
    info = _write(tmp_path / "a.pgolf", state, qname, cname)
    bench.extra_info.update(
        _info(state, qname, cname), bytes_on_disk=info.bytes_on_disk, raw_bytes=info.raw_bytes
    )
    t0 = time.perf_counter()
    load_state_dict(tmp_path / "a.pgolf", REGISTRY)  # warm-up, and it sizes the number of rounds
    rounds = adaptive_rounds(time.perf_counter() - t0)
    loaded, manifest = bench.pedantic(
        load_state_dict, args=(tmp_path / "a.pgolf", REGISTRY), rounds=rounds, iterations=1
    )
    median = median_s(bench)
    if median is not None:
        bench.extra_info["float32_mb_per_s"] = bench.extra_info["float32_bytes"] / median / 1e6
    assert set(loaded) == set(state) and manifest["compressor"]["name"] == cname
