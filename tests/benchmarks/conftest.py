"""Fixtures of the benchmark suite (pytest-benchmark; run by ``pgolf bench``, never by the
default test run: pyproject's ``norecursedirs`` skips this folder and ``addopts`` disables
benchmarks unless ``--benchmark-enable`` is given).

One thread by default (``PGOLF_BENCH_THREADS``) so numbers on a shared CPU are stable;
``PGOLF_BENCH_DEVICE=cuda`` runs the same suite on a GPU, where every benchmarked callable
synchronizes before its timer stops. The machine info of the JSON gains the torch version,
threads and, on CUDA, the device name, driver and clocks (`harness.tools.bench.device_info`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.tools.bench import device_info

ROOT = Path(__file__).resolve().parents[2]


def bench_device() -> torch.device:
    """The device the suite measures (``PGOLF_BENCH_DEVICE``, default cpu)."""
    return torch.device(os.environ.get("PGOLF_BENCH_DEVICE", "cpu"))


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(int(os.environ.get("PGOLF_BENCH_THREADS", "1")))


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    device = bench_device()
    machine_info["pgolf"] = device_info(
        device if device.type != "cuda" or torch.cuda.is_available() else "cpu"
    )


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The measured device; a CUDA request without CUDA is a usage error, not a skip."""
    dev = bench_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("PGOLF_BENCH_DEVICE=cuda but torch.cuda.is_available() is False")
    return dev


@pytest.fixture
def sync(device: torch.device) -> Callable[[], None]:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def synced(fn: Callable[..., Any], sync: Callable[[], None]) -> Callable[..., Any]:
    """``fn`` followed by ``sync()``, so a timer never stops before the device has finished."""

    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        sync()
        return out

    return call


@pytest.fixture
def bench(benchmark: Any, device: torch.device) -> Any:
    """The ``benchmark`` fixture with the device, torch version and threads in ``extra_info``."""
    benchmark.extra_info.update(device=str(device), torch=torch.__version__, threads=torch.get_num_threads())
    if device.type == "cuda":
        benchmark.extra_info["cuda_name"] = torch.cuda.get_device_name(device)
    return benchmark


def median_s(benchmark: Any) -> float | None:
    """The median seconds of a finished benchmark (None when benchmarks are disabled)."""
    stats = getattr(benchmark, "stats", None)
    return None if stats is None else stats.stats.median


def model_shape(config: Any, params: int, *, train: bool = True) -> dict[str, Any]:
    """Model shape fields for ``extra_info``, whatever the architecture calls them (and the
    training batch shape when ``train``)."""
    m = config.model
    layers = next((getattr(m, f) for f in ("num_layers", "n_layers", "trunk_layers") if hasattr(m, f)), None)
    width = next((getattr(m, f) for f in ("model_dim", "d_model") if hasattr(m, f)), None)
    out = {
        "arch": type(m).__name__,
        "layers": layers,
        "width": width,
        "params": params,
        "vocab_size": config.data.vocab_size,
    }
    if train:
        out.update(batch_tokens=config.train.train_batch_tokens, seq_len=config.train.train_seq_len)
    return out


def adaptive_rounds(seconds_per_call: float, budget_s: float = 1.5, lo: int = 5, hi: int = 30) -> int:
    """Rounds for a benchmark whose warm-up call took ``seconds_per_call``: about ``budget_s``
    in all, at least ``lo`` (a median of fewer is noise on a shared CPU) and at most ``hi``."""
    return max(lo, min(hi, int(budget_s / max(seconds_per_call, 1e-6))))
