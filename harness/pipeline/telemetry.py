"""GPU telemetry through NVML, training throughput over training steps only, and MFU.

The idea comes from the dancinlab ByteGPT trainers (docs/techniques.md §11.1), which reported GPU
utilization, memory and power from a background thread and a tokens/s figure. We keep the
shape and fix what that got wrong:

* Sampling goes through NVML (``nvidia-ml-py``'s ``pynvml``), not by parsing ``nvidia-smi``
  output in a subprocess. The thread never touches torch, so it cannot force a host sync;
  this module does not even import torch.
* Samples are taken on a fixed schedule (one at start, then every ``interval_s``; ticks
  missed while the host was busy are skipped), not "2 s after the previous call returned".
* A failed read is counted in ``gpu_sample_errors``; the reference dropped failures silently.
* ``gpu_util_*`` is NVML's ``utilization.gpu``: the share of time *any* kernel ran. It is not
  SM occupancy and not MFU (the reference's 99% util was about 21% MFU).
* ``gpu_mem_peak_mib`` is the *device-wide* used memory (every process, the CUDA context,
  the caching allocator's reserve), not torch's ``max_memory_allocated``.
* Tokens/s divide the tokens of the timed training steps by the harness's ``train_time``,
  which excludes compile priming and periodic validation; the reference divided by the whole
  loop's wall time, eval forwards and warm-up included.

Model FLOPs per token (documented formula, PaLM appendix B, Chowdhery et al. 2022):
``6 * N + 12 * L * T * d``. ``6N`` is forward (2N) plus backward (4N) matmul FLOPs of N
parameters applied per token (Kaplan et al. 2020 / Chinchilla count non-embedding
parameters: an embedding *lookup* does no matmul, but a tied output head does, so it counts;
a weight a recycled core applies k times counts k times). ``12 * L * T * d`` is attention's
QK^T and AV products, forward and backward, for L attention layers of query width d at
context T, *not* halved for the causal mask (PaLM's convention; kernels that skip masked
blocks do about half of it, so MFU is overstated by at most that share). MFU = achieved model
FLOP/s divided by the dense BF16 tensor peak of the devices used (`PEAK_BF16_FLOPS`); no
recompute (activation checkpointing) counts as useful work.

On CPU, or when NVML cannot start, every GPU field reads "n/a".
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from harness.api.errors import ConfigError

NA = "n/a"
GPU_KEYS = (
    "gpu_util_mean",
    "gpu_util_peak",
    "gpu_mem_peak_mib",
    "gpu_power_mean_w",
    "gpu_samples",
    "gpu_sample_errors",
)
"""Keys of `GpuSampler.stop` and `cpu_telemetry`."""

PEAK_BF16_FLOPS: tuple[tuple[tuple[str, ...], tuple[str, ...], float, str], ...] = (
    # (all of these substrings, none of these, dense BF16 FLOP/s, source); first match wins.
    (("h100", "pcie"), (), 756e12, "H100 PCIe datasheet: 1,513 TFLOPS with sparsity"),
    (("h100", "nvl"), (), 835e12, "H100 NVL datasheet: 1,671 TFLOPS with sparsity"),
    (("h100", "hbm3"), (), 989e12, "H100 SXM5 datasheet: 1,979 TFLOPS with sparsity"),
    (("h100", "sxm"), (), 989e12, "H100 SXM5 datasheet"),
    (("h200", "nvl"), (), 835e12, "H200 NVL datasheet: 1,671 TFLOPS with sparsity"),
    (
        ("h200",),
        ("nvl", "gh200"),
        989e12,
        "H200 SXM datasheet: 1,979 TFLOPS with sparsity (same GH100 die as H100 SXM)",
    ),
    (("a100",), (), 312e12, "A100 datasheet (SXM4 and PCIe): 624 TFLOPS with sparsity"),
    (
        ("rtx pro 6000", "blackwell"),
        ("max-q",),
        503.8e12,
        "GB202 with 188 SMs at its 2.6 GHz boost, FP32 accumulate (third-party spec table); matches "
        "NVIDIA's 4,000 sparse FP4 TOPS / 8. Max-Q (300 W) clocks lower: not listed, so n/a",
    ),
)
"""Dense (no sparsity) BF16 tensor-core peaks by device name (lower-cased substring match).
Unlisted devices, Max-Q parts and CPUs get MFU "n/a" rather than a guessed peak."""


class NvmlSource(Protocol):
    """The three NVML reads the sampler makes (``pynvml`` itself, or a fake in tests)."""

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        """Object with ``.gpu``: percent of time a kernel ran over the last sample period."""

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        """Object with ``.used``: device-wide used memory in bytes."""

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        """Board power draw in milliwatts."""


def cpu_telemetry() -> dict[str, Any]:
    """The GPU telemetry fields of a run without a GPU: every value "n/a"."""
    return dict.fromkeys(GPU_KEYS, NA)


def nvml_device_for(cuda_index: int, environ: Mapping[str, str] | None = None) -> int | str:
    """The NVML device behind torch's ``cuda:<cuda_index>``: an NVML index or a UUID string.

    NVML ignores ``CUDA_VISIBLE_DEVICES``, so ``cuda:0`` under ``CUDA_VISIBLE_DEVICES=3`` is
    NVML device 3. NVML enumerates in PCI bus order; CUDA does too on machines with identical
    GPUs (and always with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).
    """
    env = os.environ if environ is None else environ
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return cuda_index
    if not 0 <= cuda_index < len(visible):
        raise ConfigError(
            f"cuda:{cuda_index} is not among CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r}"
        )
    entry = visible[cuda_index]
    return int(entry) if entry.isdigit() else entry


class GpuSampler:
    """Background NVML sampler of one GPU between `start` and `stop` (rank 0's device).

    ``device`` is an NVML index or a UUID (`nvml_device_for`). ``source`` replaces pynvml
    (tests): when it has ``nvmlDeviceGetHandleByIndex`` / ``...ByUUID`` they give the handle,
    otherwise ``device`` itself is passed as the handle.
    """

    def __init__(
        self, device: int | str, *, interval_s: float = 2.0, source: NvmlSource | None = None
    ) -> None:
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s > 0):
            raise ConfigError(
                f"GpuSampler interval_s must be a positive number of seconds, got {interval_s!r}"
            )
        self.device, self.interval_s = device, float(interval_s)
        self.note = "not started"
        """Why the sampler is inert ("" while sampling)."""
        self._given_source, self._source, self._handle, self._owns_nvml = source, source, None, False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._util: list[float] = []
        self._mem: list[float] = []
        self._power_mw: list[float] = []
        self._ticks = self._errors = 0
        self.first_error = ""
        """Message of the first failed read, for the log."""

    @property
    def active(self) -> bool:
        """True while the thread samples."""
        return self._thread is not None

    def start(self) -> GpuSampler:
        """Open NVML and start sampling; if NVML cannot start, stay inert (never raises)."""
        if self._thread is not None:
            return self
        try:
            self._open()
        except Exception as exc:  # telemetry is best effort: record why, never fail the run
            self.note = f"NVML unavailable: {type(exc).__name__}: {exc}".strip()
            self._close()
            return self
        self.note = ""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pgolf-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _open(self) -> None:
        if self._source is None:
            import pynvml  # nvidia-ml-py; imported here so a CPU install without it still runs

            pynvml.nvmlInit()
            self._owns_nvml = True
            self._source = pynvml
        by_uuid = getattr(self._source, "nvmlDeviceGetHandleByUUID", None)
        by_index = getattr(self._source, "nvmlDeviceGetHandleByIndex", None)
        if isinstance(self.device, str) and by_uuid is not None:
            self._handle = by_uuid(self.device)
        elif isinstance(self.device, int) and by_index is not None:
            self._handle = by_index(self.device)
        else:
            self._handle = self.device

    def _close(self) -> None:
        if self._owns_nvml:
            self._owns_nvml = False
            try:
                self._source.nvmlShutdown()
            except Exception:  # shutting down a half-started NVML must not fail the run either
                pass
            self._source = self._given_source

    def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            self._sample()
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:  # fell behind (busy host): skip the missed ticks, don't burst
                next_at = now + self.interval_s
            if self._stop.wait(next_at - now):
                return

    def _sample(self) -> None:
        """One tick: three independent reads, so a board without power readings keeps util."""
        self._ticks += 1
        failed = False
        reads = (
            (self._util, lambda: self._source.nvmlDeviceGetUtilizationRates(self._handle).gpu),
            (self._mem, lambda: self._source.nvmlDeviceGetMemoryInfo(self._handle).used),
            (self._power_mw, lambda: self._source.nvmlDeviceGetPowerUsage(self._handle)),
        )
        for values, read in reads:
            try:
                values.append(float(read()))
            except Exception as exc:  # counted in gpu_sample_errors, never silently dropped
                failed = True
                self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"
        self._errors += int(failed)

    def stop(self) -> dict[str, Any]:
        """Stop sampling and return the `GPU_KEYS` fields ("n/a" when inert or nothing was read)."""
        if self._thread is None:
            return cpu_telemetry()
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._close()
        self.note = "stopped"
        return {
            "gpu_util_mean": _mean(self._util),
            "gpu_util_peak": max(self._util) if self._util else NA,
            "gpu_mem_peak_mib": max(self._mem) / 2**20 if self._mem else NA,
            "gpu_power_mean_w": _mean(self._power_mw) / 1000.0 if self._power_mw else NA,
            "gpu_samples": self._ticks,
            "gpu_sample_errors": self._errors,
        }


def _mean(values: list[float]) -> float | str:
    return math.fsum(values) / len(values) if values else NA


def train_tokens_per_second(steps: int, train_batch_tokens: int, train_time_ms: float) -> float | str:
    """Tokens of the timed training steps per second of training time ("n/a" when nothing trained).

    ``train_batch_tokens`` is the global batch (all ranks, all micro-batches) of one step, so
    this is the whole run's throughput; divide by the device count for per-GPU numbers.
    """
    if steps < 0 or train_batch_tokens < 0 or not train_time_ms >= 0:
        raise ConfigError(
            f"throughput needs steps, train_batch_tokens, train_time_ms >= 0, "
            f"got {steps}, {train_batch_tokens}, {train_time_ms}"
        )
    if steps == 0 or train_time_ms == 0:
        return NA
    return steps * train_batch_tokens / (train_time_ms / 1000.0)


def model_flops_per_token(
    n_params: int, num_layers: int, seq_len: int, model_dim: int, *, non_embedding_params: int | None = None
) -> float:
    """Training FLOPs per token: ``6 * N + 12 * num_layers * seq_len * model_dim`` (module docstring).

    N is ``non_embedding_params`` when given (the matmul parameters applied per token, the
    preferred count), else ``n_params``. ``num_layers`` counts attention layers as executed
    (0 for an attention-free model).
    """
    n = n_params if non_embedding_params is None else non_embedding_params
    for name, value in (("N", n), ("num_layers", num_layers), ("seq_len", seq_len), ("model_dim", model_dim)):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"model_flops_per_token: {name} must be a non-negative integer, got {value!r}")
    return 6.0 * n + 12.0 * num_layers * seq_len * model_dim


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense BF16 peak FLOP/s of one device named like ``torch.cuda.get_device_name``; None if unknown."""
    name = device_name.lower()
    for need, refuse, peak, _source in PEAK_BF16_FLOPS:
        if all(s in name for s in need) and not any(s in name for s in refuse):
            return peak
    return None


def mfu(
    tokens_per_s: float | str, flops_per_token: float, device_name: str, *, num_devices: int = 1
) -> float | str:
    """Model FLOPs utilization in [0, 1]: tokens/s * FLOPs/token / (num_devices * peak).

    ``tokens_per_s`` is the run's total over ``num_devices`` identical devices. "n/a" on CPU,
    for unlisted devices and when there is no throughput.
    """
    if not isinstance(num_devices, int) or num_devices < 1:
        raise ConfigError(f"num_devices must be a positive integer, got {num_devices!r}")
    peak = peak_bf16_flops(device_name)
    if (
        peak is None
        or isinstance(tokens_per_s, str)
        or not (math.isfinite(tokens_per_s) and tokens_per_s > 0)
    ):
        return NA
    return tokens_per_s * flops_per_token / (peak * num_devices)


def throughput(
    steps: int,
    train_batch_tokens: int,
    train_time_ms: float,
    flops_per_token: float,
    device_name: str,
    *,
    num_devices: int = 1,
) -> dict[str, Any]:
    """``train_tokens_per_s``, ``model_flops_per_token``, ``peak_bf16_flops`` and ``mfu`` of a run."""
    tps = train_tokens_per_second(steps, train_batch_tokens, train_time_ms)
    peak = peak_bf16_flops(device_name)
    return {
        "train_tokens_per_s": tps,
        "model_flops_per_token": flops_per_token,
        "peak_bf16_flops": peak if peak is not None else NA,
        "mfu": mfu(tps, flops_per_token, device_name, num_devices=num_devices),
    }


def telemetry_line(record: Mapping[str, Any]) -> str:
    """``telemetry: key:value ...`` for train.log, in the record's order ("n/a" kept as is)."""
    parts = []
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, float):
            text = str(value)
        elif key == "mfu":
            text = f"{value:.4f}"
        elif key in ("model_flops_per_token", "peak_bf16_flops"):
            text = f"{value:.4e}"
        else:
            text = f"{value:.1f}"
        parts.append(f"{key}:{text}")
    return "telemetry: " + " ".join(parts)
