"""GPU telemetry with a fake NVML source, the real pynvml on a machine without a GPU, and the
throughput / MFU arithmetic checked by hand and against the 3B cross-check (docs/techniques.md
§11.1)."""

from __future__ import annotations

import ast
import itertools
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.api.errors import ConfigError
from harness.pipeline import telemetry
from harness.pipeline.telemetry import (
    GPU_KEYS,
    GpuSampler,
    cpu_telemetry,
    mfu,
    model_flops_per_token,
    nvml_device_for,
    peak_bf16_flops,
    telemetry_line,
    throughput,
    train_tokens_per_second,
)

MIB = 2**20


class FakeNvml:
    """Cycles through chosen readings and logs every value it hands out."""

    def __init__(
        self,
        util=(10, 40, 100, 30),
        mem=(1024 * MIB, 3072 * MIB, 2048 * MIB),
        power_mw=(100_000, 300_000),
        fail=(),
    ):
        self._util, self._mem, self._power = (
            itertools.cycle(util),
            itertools.cycle(mem),
            itertools.cycle(power_mw),
        )
        self.fail = set(fail)
        self.given: dict[str, list[float]] = {"util": [], "mem": [], "power": []}
        self.handles: list[object] = []
        self.threads: set[str] = set()

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def _give(self, kind, source, handle):
        self.threads.add(threading.current_thread().name)
        self.handles.append(handle)
        if kind in self.fail:
            raise RuntimeError(f"{kind} not supported")
        value = next(source)
        self.given[kind].append(value)
        return value

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=self._give("util", self._util, handle), memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self._give("mem", self._mem, handle), total=80 * 1024 * MIB)

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._give("power", self._power, handle)


def _run(source, seconds=0.3, interval=0.05) -> dict:
    sampler = GpuSampler(2, interval_s=interval, source=source).start()
    assert sampler.active
    time.sleep(seconds)
    return sampler.stop()


def test_sampler_statistics_are_exact_over_the_readings_given():
    fake = FakeNvml()
    stats = _run(fake)
    n = stats["gpu_samples"]
    assert 3 <= n <= 8, f"{n} samples at 0.05 s over 0.3 s"  # ~7 expected; loose for a loaded host
    assert stats["gpu_sample_errors"] == 0
    assert len(fake.given["util"]) == len(fake.given["mem"]) == len(fake.given["power"]) == n
    assert stats["gpu_util_mean"] == pytest.approx(sum(fake.given["util"]) / n, abs=1e-12)
    assert stats["gpu_util_peak"] == max(fake.given["util"]) == 100
    assert stats["gpu_mem_peak_mib"] == 3072.0
    assert stats["gpu_power_mean_w"] == pytest.approx(sum(fake.given["power"]) / n / 1000, abs=1e-12)
    assert set(fake.handles) == {("handle", 2)}
    assert fake.threads == {"pgolf-gpu-sampler"}  # every read happened on the sampler thread
    assert set(stats) == set(GPU_KEYS)


def test_interval_is_honoured_roughly():
    fake = FakeNvml()
    stats = _run(fake, seconds=0.25, interval=0.1)
    assert 2 <= stats["gpu_samples"] <= 4  # ticks at 0, 0.1, 0.2 (+ a late one at most)


def test_failed_reads_are_counted_and_other_readings_kept():
    fake = FakeNvml(fail={"power"})
    sampler = GpuSampler(0, interval_s=0.05, source=fake).start()
    time.sleep(0.2)
    stats = sampler.stop()
    assert stats["gpu_samples"] >= 2
    assert stats["gpu_sample_errors"] == stats["gpu_samples"]
    assert stats["gpu_power_mean_w"] == "n/a"
    assert stats["gpu_util_mean"] == pytest.approx(sum(fake.given["util"]) / stats["gpu_samples"])
    assert "power not supported" in sampler.first_error


def test_source_that_cannot_open_the_device_leaves_an_inert_sampler():
    class NoDevice(FakeNvml):
        def nvmlDeviceGetHandleByIndex(self, index):
            raise RuntimeError("Invalid Argument")

    sampler = GpuSampler(5, interval_s=0.05, source=NoDevice()).start()
    assert not sampler.active and "Invalid Argument" in sampler.note
    assert sampler.stop() == dict.fromkeys(GPU_KEYS, "n/a")


def test_real_nvml_without_a_gpu_gives_na_and_never_raises():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVML; the no-GPU path cannot be tested here")
    sampler = GpuSampler(0, interval_s=0.05).start()
    assert not sampler.active and sampler.note.startswith("NVML unavailable")
    assert sampler.stop() == dict.fromkeys(GPU_KEYS, "n/a")


def test_cpu_telemetry_is_all_na():
    assert cpu_telemetry() == {k: "n/a" for k in GPU_KEYS}
    assert set(GPU_KEYS) == {
        "gpu_util_mean",
        "gpu_util_peak",
        "gpu_mem_peak_mib",
        "gpu_power_mean_w",
        "gpu_samples",
        "gpu_sample_errors",
    }


def test_telemetry_module_never_imports_torch():
    # The sampler thread cannot sync the host if the module has no torch to call.
    tree = ast.parse(Path(telemetry.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(name == "torch" or name.startswith("torch.") for name in imported)


def test_nvml_device_follows_cuda_visible_devices():
    assert nvml_device_for(1, {}) == 1
    assert nvml_device_for(1, {"CUDA_VISIBLE_DEVICES": "3,5"}) == 5
    assert nvml_device_for(0, {"CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d"}) == "GPU-1a2b"
    with pytest.raises(ConfigError, match="CUDA_VISIBLE_DEVICES"):
        nvml_device_for(2, {"CUDA_VISIBLE_DEVICES": "3,5"})


def test_tokens_per_second_by_hand():
    # 100 steps x 524,288 tokens in 50 s -> 1,048,576 tokens/s.
    assert train_tokens_per_second(100, 524_288, 50_000.0) == 1_048_576.0
    assert train_tokens_per_second(0, 524_288, 0.0) == "n/a"  # eval-only run
    with pytest.raises(ConfigError):
        train_tokens_per_second(-1, 10, 10.0)


def test_flops_per_token_by_hand():
    # 6 * 1000 + 12 * 2 * 128 * 64 = 6,000 + 196,608
    assert model_flops_per_token(5000, 2, 128, 64, non_embedding_params=1000) == 202_608.0
    assert model_flops_per_token(5000, 0, 128, 64) == 30_000.0  # attention-free: 6N with N = all params


def test_mfu_matches_the_3b_cross_check_of_byte_lms():
    # The 3B reference run (docs/techniques.md §11.1): 3,149,030,400 params, 40 layers, d 2560,
    # block 512, 11,183 tok/s on an H100 SXM. 6·N times that rate is about 211 TFLOP/s, the
    # attention term adds about 3 %, and the result is about 21 % MFU.
    n, tps, name = 3_149_030_400, 11_183.0, "NVIDIA H100 80GB HBM3"
    six_n = model_flops_per_token(n, 0, 512, 2560)
    full = model_flops_per_token(n, 40, 512, 2560)
    assert six_n * tps == pytest.approx(211e12, rel=0.005)
    assert full / six_n - 1 == pytest.approx(12 * 40 * 512 * 2560 / (6 * n))
    assert 0.025 < full / six_n - 1 < 0.04
    assert mfu(tps, six_n, name) == pytest.approx(6 * n * tps / 989e12)
    assert 0.20 < mfu(tps, six_n, name) < 0.22
    # Two devices at the same total throughput: half the utilization each.
    assert mfu(tps, full, name, num_devices=2) == pytest.approx(full * tps / (2 * 989e12))


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 503.8e12),
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA GeForce GTX 1080", None),
        ("cpu (x86_64)", None),
    ],
)
def test_peak_table(name, peak):
    assert peak_bf16_flops(name) == peak


def test_mfu_is_na_on_cpu_unknown_devices_and_without_throughput():
    assert mfu(1e6, 1e8, "cpu (x86_64)") == "n/a"
    assert mfu(1e6, 1e8, "NVIDIA GeForce GTX 1080") == "n/a"
    assert mfu("n/a", 1e8, "NVIDIA H100 80GB HBM3") == "n/a"
    assert mfu(1e6, 1e8, "NVIDIA H100 PCIe") == pytest.approx(1e14 / 756e12)


def test_throughput_record_and_log_line():
    rec = throughput(100, 524_288, 50_000.0, 1e8, "cpu (x86_64)")
    assert rec == {
        "train_tokens_per_s": 1_048_576.0,
        "model_flops_per_token": 1e8,
        "peak_bf16_flops": "n/a",
        "mfu": "n/a",
    }
    line = telemetry_line({**cpu_telemetry(), **rec})
    assert line.startswith("telemetry: gpu_util_mean:n/a ")
    assert "train_tokens_per_s:1048576.0 model_flops_per_token:1.0000e+08 peak_bf16_flops:n/a mfu:n/a" in line
    h100 = throughput(10, 1000, 1000.0, 1e9, "NVIDIA H100 80GB HBM3")
    assert math.isclose(h100["mfu"], 1e13 / 989e12)
    assert f"mfu:{1e13 / 989e12:.4f}" in telemetry_line(h100)
