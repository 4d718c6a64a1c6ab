"""``pgolf bench``: run the benchmark suite, compare it with the stored baseline, GPU ms/step.

The CPU suite lives in ``tests/benchmarks/`` and is measured with pytest-benchmark (the
pluggy project keeps its benchmarks the same way, in a separate run). This module runs it
in a subprocess, reads the JSON it writes and compares it with the baseline stored at
``benchmarks/cpu/baseline.json`` by pytest-benchmark's ``--benchmark-compare-fail=median:P%``
rule: a benchmark whose median grew by more than P percent has regressed.

It also holds what the suite and ``--gpu`` share: shrinking a submission's own
``build_config()`` to a fixed small shape through the ``--set`` machinery of
`harness.api.config`, and one training step through the real `harness.pipeline.trainer.Trainer` fed with
synthetic tokens. ``--gpu`` times 12L_recycled and 10L_int5mlp at full shape, the 8-GPU
global batch emulated by gradient accumulation on one GPU (8 // world size, as upstream
single-GPU ports such as PR #560 ran), with CUDA events.

Longer than 400 lines because it is one command (``pgolf bench``): setting up the benchmark
models for every submission, running the pytest-benchmark suite, the stored-baseline comparison
table and the GPU ms/step runner.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from harness.api.config import RunConfig, component_modules, resolve
from harness.api.context import DistInfo, TrainContext
from harness.api.errors import ConfigError, PgolfError
from harness.api.fileio import write_atomic
from harness.pipeline.runlog import RunLogger
from harness.pipeline.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / "tests" / "benchmarks"
BASELINE_PATH = ROOT / "benchmarks" / "cpu" / "baseline.json"
GPU_DIR = ROOT / "benchmarks" / "gpu"
DEFAULT_THRESHOLD = 50.0
"""Percent growth of a median that counts as a regression. Generous on purpose: on the
project's shared 2-core machine (load average ~3) two consecutive runs of the same code gave
median ratios from 0.63 to 1.41; on a quiet machine pass ``--threshold 10``."""
GPU_SUBMISSIONS = ("12L_recycled", "10L_int5mlp")
OVERHEAD_LIMIT = 1.05
"""Harness step time / hand-written step time must stay below this."""

# The fixed small CPU shape every submission is shrunk to.
SMALL_LAYERS = 2
SMALL_WIDTH = 64
SMALL_HEADS = 2
SMALL_SEQ_LEN = 128
SMALL_BATCH_TOKENS = 2048

# The full challenge validation split (docs/protocol.md §2.6) and the record evaluation shape.
FULL_VAL_TOKENS = 62_021_632
FULL_WINDOW = 2048
FULL_STRIDE = 64

# Names of the benchmarks the summary lines read (tests/benchmarks/).
OVERHEAD_BENCH = "test_plugin_overhead"
SLIDING_FAST_BENCH = "test_eval_sliding_fast"
SLIDING_REFERENCE_BENCH = "test_eval_sliding_reference"


# ------------------------------------------------------------------ shrinking a submission


def _remap_layers(layers: tuple[int, ...], old: int, new: int) -> tuple[int, ...]:
    """Layer indices of an ``old``-layer model mapped proportionally onto ``new`` layers."""
    mapped = (min(new - 1, i * new // max(old, 1)) for i in layers)
    return tuple(dict.fromkeys(mapped))  # ordered and distinct, as the components require


def _shrink_component(comp: Any, old_layers: int, layers: int, width: int) -> Any:
    """A GPT component Config with its layer indices and widths fitted to the small model."""
    if not dataclasses.is_dataclass(comp):
        return comp
    changes: dict[str, Any] = {}
    for f in fields(comp):
        value = getattr(comp, f.name)
        if f.name == "layers" and isinstance(value, tuple):
            changes[f.name] = _remap_layers(value, old_layers, layers)
        elif f.name == "last_n" and isinstance(value, int):
            changes[f.name] = min(value, layers)
        elif f.name == "first_layer" and isinstance(value, int):
            changes[f.name] = _remap_layers((value,), old_layers, layers)[0]
        elif f.name == "dim" and isinstance(value, int):
            changes[f.name] = min(value, width)
    return dataclasses.replace(comp, **changes)


def _gpt_sets(model: Any, layers: int, width: int) -> dict[str, Any]:
    heads = SMALL_HEADS
    # Keep the query/KV head ratio (GQA) of the full model.
    kv = max(1, heads * model.num_kv_heads // max(model.num_heads, 1))
    # Applied in this order, and each step is validated: KV heads before heads, the
    # components (their layer indices) before the depth.
    out: dict[str, Any] = {"model.num_kv_heads": kv, "model.num_heads": heads}
    if model.rope_dims:
        out["model.rope_dims"] = min(model.rope_dims, width // heads)
    out["model.model_dim"] = width
    out["model.components"] = tuple(
        _shrink_component(c, model.num_layers, layers, width) for c in model.components
    )
    out["model.num_layers"] = layers
    return out


def model_sets(
    model: Any, *, layers: int = SMALL_LAYERS, width: int = SMALL_WIDTH, seq_len: int = SMALL_SEQ_LEN
) -> dict[str, Any]:
    """The ``model.*`` overrides that shrink ``model`` (an arch Config) to ``layers`` x ``width``.

    The family is told by its field names: GPT (num_layers/model_dim), byte GPT
    (n_layers/d_model/n_heads) and conv MoE (trunk_layers/d_model). Anything else raises
    ConfigError: a new architecture must be taught here, not skipped.
    """
    names = {f.name for f in fields(model)} if dataclasses.is_dataclass(model) else set()
    if {"num_layers", "model_dim", "num_heads", "num_kv_heads", "components"} <= names:
        return _gpt_sets(model, layers, width)
    if {"n_layers", "d_model", "n_heads", "block_size"} <= names:
        return {
            "model.n_heads": SMALL_HEADS,
            "model.d_model": width,
            "model.n_layers": layers,
            "model.block_size": seq_len,
        }
    if {"trunk_layers", "d_model"} <= names:
        return {"model.trunk_layers": layers, "model.d_model": width}
    raise ConfigError(
        f"cannot shrink model config {type(model).__qualname__} for the benchmarks: it has none of the known "
        "depth/width field sets (num_layers+model_dim, n_layers+d_model, trunk_layers+d_model); "
        "teach harness.tools.bench.model_sets its field names"
    )


def train_sets(*, seq_len: int, batch_tokens: int, grad_accum_steps: int = 1) -> dict[str, Any]:
    """Training overrides for a benchmark: exactly one timed step per ``Trainer.run()``, no
    wallclock cap, no compile priming, no periodic validation."""
    return {
        "train.train_seq_len": seq_len,
        "train.train_batch_tokens": batch_tokens,
        "train.grad_accum_steps": grad_accum_steps,
        "train.iterations": 1,
        "train.max_wallclock_seconds": 0.0,
        "train.warmup_steps": 0,
        "train.val_loss_every": 0,
        "train.train_log_every": 1,
    }


def shrink_config(
    config: RunConfig,
    *,
    layers: int = SMALL_LAYERS,
    width: int = SMALL_WIDTH,
    seq_len: int = SMALL_SEQ_LEN,
    batch_tokens: int = SMALL_BATCH_TOKENS,
) -> RunConfig:
    """``config`` (a submission's ``build_config()``) at the fixed small CPU shape.

    Resolved like a CPU run with no environment, then the model and train overrides go
    through the same type-checked ``--set`` path as ``pgolf run --set``.
    """
    sets = {
        **model_sets(config.model, layers=layers, width=width, seq_len=seq_len),
        **train_sets(seq_len=seq_len, batch_tokens=batch_tokens),
        "eval.eval_seq_len": seq_len,
        # A stride above the shrunk window is refused; the benchmarks used min(stride, window) anyway.
        "eval.eval_stride": min(config.eval.eval_stride, seq_len),
    }
    try:
        return resolve(config, cuda=False, environ={}, sets=sets)
    except ConfigError as exc:
        raise ConfigError(f"submission {config.name!r} cannot be shrunk for the benchmarks: {exc}") from None


# ------------------------------------------------------------------ one step through the harness


class SyntheticLoader:
    """The loader interface of `harness.pipeline.shards.DistributedTokenLoader` over seeded random tokens."""

    def __init__(self, vocab_size: int, device: torch.device, seed: int = 0) -> None:
        self.vocab_size, self.device, self.seed = vocab_size, torch.device(device), seed
        self.reset()

    def reset(self, state: Any = None) -> None:
        """Restart the token sequence."""
        self.gen = torch.Generator().manual_seed(self.seed)

    def next_batch(
        self, global_tokens: int, seq_len: int, grad_accum_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch (x, y) of ``global_tokens // grad_accum_steps`` tokens in rows of ``seq_len``."""
        local = global_tokens // grad_accum_steps
        if local <= 0 or local % seq_len:
            raise ConfigError(
                f"{global_tokens} tokens over {grad_accum_steps} micro-batches "
                f"is not a multiple of seq_len {seq_len}"
            )
        tokens = torch.randint(0, self.vocab_size, (local + 1,), generator=self.gen)
        x, y = tokens[:-1].reshape(-1, seq_len), tokens[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def _no_validation() -> dict[str, float]:
    return {"val_loss": 0.0, "val_bpb": 0.0}  # the step is timed, not the model's quality


@dataclass
class TrainBench:
    """A submission's model, optimizer and observers, wired as `harness.pipeline.runner` wires them."""

    config: RunConfig
    ctx: TrainContext
    trainer: Trainer
    manager: Any

    def step(self) -> None:
        """One training step through ``Trainer.run``: schedule, micro-batches, optimizer,
        ``pg_step_end`` hooks, the loss check and the log lines."""
        result = self.trainer.run()
        if result.steps != 1:
            raise PgolfError(f"benchmark trainer ran {result.steps} steps, expected 1")

    @property
    def n_params(self) -> int:
        """Parameters of the model."""
        return sum(p.numel() for p in self.ctx.model.parameters())

    def close(self) -> None:
        """Close the run log."""
        self.ctx.log.close()


def build_train_bench(config: RunConfig, device: torch.device | str, run_dir: Path) -> TrainBench:
    """Build ``config``'s model, optimizer and observer plugins on ``device``, call
    ``pg_train_start`` and wrap for training (compile on CUDA) exactly as the runner does;
    the data are synthetic and validation is a no-op. ``run_dir`` receives the log."""
    from harness.pipeline.plugin_manager import run_manager
    from harness.pipeline.setup import autocast_dtype_for, seed_everything
    from harness.pipeline.training import register_run_plugins, wrap_for_training

    device = torch.device(device)
    manager = run_manager(component_modules(config))
    manager.hook.pg_configure(run=config)
    seed_everything(config.train.seed)
    model = config.model.build(config.data.vocab_size).to(device)
    optimizer = config.optimizer.build(model)
    register_run_plugins(manager, config)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=device, backend=None)
    log = RunLogger(Path(run_dir), 0, echo=False)
    ctx = TrainContext(
        config=config,
        model=model,
        optimizer=optimizer,
        log=log,
        dist=dist,
        autocast_dtype=autocast_dtype_for(device),
        run_dir=Path(run_dir),
    )
    manager.hook.pg_train_start(ctx=ctx)
    loader = SyntheticLoader(config.data.vocab_size, device, seed=config.train.seed)
    trainer = Trainer(
        ctx,
        train_model=wrap_for_training(model, config, dist),
        loader=loader,
        validate=_no_validation,
        hooks=manager.hook,
    )
    return TrainBench(config=config, ctx=ctx, trainer=trainer, manager=manager)


def sliding_window_count(
    total_targets: int = FULL_VAL_TOKENS, window: int = FULL_WINDOW, stride: int = FULL_STRIDE
) -> int:
    """How many windows `harness.pipeline.eval.sliding_windows` makes, without building the list.

    The first window starts at 0, then one per ``stride`` while the start is below
    ``total_targets - (window - stride)``.
    """
    if total_targets <= 0:
        return 0
    stride = min(stride, window)
    last = total_targets - (window - stride)  # exclusive bound of the later starts
    return 1 + max(0, -(-(last - stride) // stride))


# ------------------------------------------------------------------ machine identity


def _nvidia_smi(index: int) -> dict[str, str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit"
    try:
        out = subprocess.run(
            [exe, f"--id={index}", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.strip().split(",")]
    return dict(zip(query.split(","), values, strict=True)) if len(values) == len(query.split(",")) else {}


def device_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Torch version, threads, CPU, and on CUDA the device name, capability, memory, CUDA
    version, driver and clocks (the last two from nvidia-smi when it is installed)."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            {
                "cuda_name": props.name,
                "cuda_capability": f"{props.major}.{props.minor}",
                "cuda_memory_mib": props.total_memory // 2**20,
                "cuda_version": torch.version.cuda,
                **{f"nvidia_{k.replace('.', '_')}": v for k, v in _nvidia_smi(index).items()},
            }
        )
    return info


# ------------------------------------------------------------------ reading and comparing results


@dataclass(frozen=True)
class BenchRow:
    """One benchmark in the comparison table (times in seconds; None when absent on one side)."""

    name: str
    baseline_median: float | None
    now_median: float | None
    baseline_mean: float | None
    now_mean: float | None
    status: str
    """"ok", "REGRESSED" (median grew past the threshold), "new" or "missing"."""

    @property
    def ratio(self) -> float | None:
        """now / baseline of the medians."""
        if self.baseline_median is None or self.now_median is None:
            return None
        return self.now_median / self.baseline_median

    @property
    def mean_ratio(self) -> float | None:
        """now / baseline of the means."""
        if self.baseline_mean is None or self.now_mean is None:
            return None
        return self.now_mean / self.baseline_mean


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """The benchmarks of a pytest-benchmark JSON file, by name; ConfigError naming the file
    and the problem when it is missing, not JSON, or not pytest-benchmark output."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"benchmark results {path} do not exist; store a baseline with `pgolf bench --save` "
            "or pass an existing pytest-benchmark JSON with --compare"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"benchmark results {path} are not readable JSON: {exc}") from None
    items = doc.get("benchmarks") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError(
            f"benchmark results {path}: expected a pytest-benchmark JSON object with a 'benchmarks' list"
        )
    out: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        stats = item.get("stats") if isinstance(item, dict) else None
        if (
            not isinstance(name, str)
            or not isinstance(stats, dict)
            or not all(_positive(stats.get(k)) for k in ("median", "mean"))
        ):
            raise ConfigError(
                f"benchmark results {path}: benchmarks[{i}] needs a 'name' "
                "and 'stats' with positive 'median' and 'mean'"
            )
        if name in out:
            raise ConfigError(f"benchmark results {path}: benchmark {name!r} appears twice")
        out[name] = item
    return out


def compare_results(
    baseline: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
    threshold_pct: float = DEFAULT_THRESHOLD,
) -> list[BenchRow]:
    """One row per benchmark of either side, sorted by name. A benchmark regressed when its
    median grew by more than ``threshold_pct`` percent (``--benchmark-compare-fail=median:P%``)."""
    if not _positive(threshold_pct):
        raise ConfigError(f"--threshold must be a positive percentage, got {threshold_pct!r}")
    rows = []
    for name in sorted(set(baseline) | set(current)):
        b, c = baseline.get(name), current.get(name)
        bm, bmean = (b["stats"]["median"], b["stats"]["mean"]) if b else (None, None)
        cm, cmean = (c["stats"]["median"], c["stats"]["mean"]) if c else (None, None)
        if b is None:
            status = "new"
        elif c is None:
            status = "missing"
        else:
            status = "REGRESSED" if (cm - bm) / bm * 100.0 > threshold_pct else "ok"
        rows.append(BenchRow(name, bm, cm, bmean, cmean, status))
    return rows


def regressions(rows: Sequence[BenchRow]) -> list[BenchRow]:
    """The rows whose median regressed past the threshold."""
    return [r for r in rows if r.status == "REGRESSED"]


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3f}"


def format_table(rows: Sequence[BenchRow]) -> str:
    """A fixed-width table: name | baseline (median) | now (median) | ratio | mean ratio | status."""
    head = ("benchmark", "baseline", "now", "ratio", "mean ratio", "status")
    body = [
        (
            r.name,
            _fmt_time(r.baseline_median),
            _fmt_time(r.now_median),
            _fmt_ratio(r.ratio),
            _fmt_ratio(r.mean_ratio),
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_lines(current: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The plugin-overhead ratio and the sliding-window speed-up and projection, from the
    ``extra_info`` and medians the suite recorded (absent benchmarks are said to be absent)."""
    lines = []
    over = current.get(OVERHEAD_BENCH)
    if over is None:
        lines.append(f"plugin overhead: {OVERHEAD_BENCH} did not run")
    else:
        info = over.get("extra_info", {})
        ratio = info.get("plugin_overhead_ratio")
        verdict = "ok" if isinstance(ratio, (int, float)) and ratio < OVERHEAD_LIMIT else "OVER LIMIT"
        lines.append(
            f"plugin overhead: harness step / hand-written step = {ratio:.3f} "
            f"(limit {OVERHEAD_LIMIT}, {verdict}; "
            f"medians {info.get('harness_median_ms', float('nan')):.2f} ms "
            f"vs {info.get('reference_median_ms', float('nan')):.2f} ms "
            f"over {info.get('rounds', '?')} interleaved rounds)"
            if isinstance(ratio, (int, float))
            else "plugin overhead: no ratio recorded"
        )
    fast, ref = current.get(SLIDING_FAST_BENCH), current.get(SLIDING_REFERENCE_BENCH)
    if fast is not None and ref is not None:
        speedup = ref["stats"]["median"] / fast["stats"]["median"]
        lines.append(
            f"sliding window: fast path {speedup:.2f}x the plain implementation (median time plain / fast)"
        )
    for bench in (fast, ref):
        info = (bench or {}).get("extra_info", {})
        if "windows_per_s" in info and "projected_full_val_s" in info:
            lines.append(
                f"  {bench['name']}: {info['windows_per_s']:.1f} windows/s -> full validation "
                f"({info.get('full_val_windows', '?')} windows of {FULL_WINDOW} at stride {FULL_STRIDE}) "
                f"~{info['projected_full_val_s'] / 3600:.1f} h on this device "
                f"for the {info.get('model', 'benchmark')} model"
            )
    return lines


# ------------------------------------------------------------------ running the suite


def require_bench_tools() -> None:
    """ConfigError unless pytest and pytest-benchmark are installed (the ``test`` extra)."""
    import importlib.util

    missing = [name for name in ("pytest", "pytest_benchmark") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"pgolf bench needs {' and '.join(missing)} (the test extra): pip install -e '.[test]'"
        )


def run_suite(json_out: Path, pytest_args: Sequence[str] = ()) -> int:
    """Run ``tests/benchmarks`` with benchmarks enabled, writing pytest-benchmark JSON to
    ``json_out``; returns pytest's exit status."""
    require_bench_tools()
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCH_DIR),
        "--benchmark-enable",
        f"--benchmark-json={json_out}",
        "-q",
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def _save_baseline(source: Path, target: Path) -> None:
    load_results(source)  # never store something the comparison cannot read
    write_atomic(target, source.read_bytes())


def bench_cpu(
    compare: Path | None, save: bool, threshold: float = DEFAULT_THRESHOLD, pytest_args: Sequence[str] = ()
) -> int:
    """Run the CPU suite; store it (``save``) or compare it with the baseline. Returns the
    exit status: 1 if pytest failed or a benchmark regressed, else 0."""
    baseline_path = Path(compare) if compare is not None else BASELINE_PATH
    if not _positive(threshold):
        raise ConfigError(f"--threshold must be a positive percentage, got {threshold!r}")
    if save:  # the table then shows what the new baseline changes (all "new" without an old one)
        baseline = load_results(baseline_path) if baseline_path.is_file() else {}
    else:
        baseline = load_results(baseline_path)  # fail before the suite runs for minutes
    with tempfile.TemporaryDirectory(prefix="pgolf-bench-") as tmp:
        out = Path(tmp) / "now.json"
        rc = run_suite(out, pytest_args)
        if not out.is_file():
            raise PgolfError(f"the benchmark suite exited with status {rc} and wrote no results")
        current = load_results(out)
        if save:
            _save_baseline(out, baseline_path)
    rows = compare_results(baseline, current, threshold)
    print(format_table(rows))
    for line in summary_lines(current):
        print(line)
    if save:
        print(f"saved baseline {baseline_path} ({len(current)} benchmarks)")
        return 0 if rc == 0 else 1
    bad = regressions(rows)
    print(
        f"compared with {baseline_path}: {len(bad)} of {len(rows)} "
        f"regressed by more than {threshold:g}% (median)"
    )
    if rc != 0:
        print(f"benchmark suite failed: pytest exit status {rc}")
    return 1 if bad or rc != 0 else 0


# ------------------------------------------------------------------ GPU


def require_cuda() -> torch.device:
    """The CUDA device, or ConfigError saying that ``--gpu`` needs one."""
    if not torch.cuda.is_available():
        raise ConfigError(
            "pgolf bench --gpu needs a CUDA device, and torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "run `pgolf bench` for the CPU suite"
        )
    return torch.device("cuda", torch.cuda.current_device())


def _cuda_ms(fn: Any) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _gpu_train(
    config: RunConfig, device: torch.device, run_dir: Path, warm: int, timed: int
) -> tuple[dict[str, Any], TrainBench]:
    """ms/step of ``config`` at full shape, one GPU, grad accumulation 8 (the 8-GPU batch)."""
    sets = train_sets(
        seq_len=config.train.train_seq_len, batch_tokens=config.train.train_batch_tokens, grad_accum_steps=0
    )
    config = resolve(config, cuda=True, environ={}, sets=sets)
    torch.cuda.reset_peak_memory_stats(device)
    tb = build_train_bench(config, device, run_dir)
    for _ in range(warm):  # compilation and allocator warm-up
        tb.step()
    times = [_cuda_ms(tb.step) for _ in range(timed)]
    median = statistics.median(times)
    return {
        "params": tb.n_params,
        "global_batch_tokens": config.train.train_batch_tokens,
        "seq_len": config.train.train_seq_len,
        "grad_accum_steps": tb.trainer.accum,
        "compile": config.train.compile,
        "warm_steps": warm,
        "timed_steps": timed,
        "ms_per_step_median": median,
        "ms_per_step_min": min(times),
        "ms_per_step_all": times,
        "train_tokens_per_s": config.train.train_batch_tokens / (median / 1000.0),
        "peak_memory_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
    }, tb


def _gpu_sliding(tb: TrainBench, device: torch.device, batches: int) -> dict[str, Any]:
    """Sliding-window windows/s of the trained model on synthetic tokens, and the projection."""
    from harness.pipeline.eval import evaluate_sliding

    cfg = tb.config
    window = cfg.eval.eval_seq_len or cfg.train.train_seq_len
    stride, batch_seqs = min(cfg.eval.eval_stride, window), cfg.eval.eval_batch_seqs
    n_windows = batches * batch_seqs
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.data.vocab_size, (window + (n_windows - 1) * stride + 1,), generator=gen)
    luts = uniform_luts(cfg.data.vocab_size)
    model = tb.ctx.model.eval()

    def once() -> None:
        evaluate_sliding(
            model,
            tokens,
            luts,
            window=window,
            stride=stride,
            batch_seqs=batch_seqs,
            device=device,
            autocast_dtype=tb.ctx.autocast_dtype,
            compile_model=cfg.train.compile,
        )

    once()  # compile
    torch.cuda.reset_peak_memory_stats(device)
    ms = _cuda_ms(once)
    per_s = n_windows / (ms / 1000.0)
    full = sliding_window_count(FULL_VAL_TOKENS, window, stride)
    return {
        "window": window,
        "stride": stride,
        "batch_seqs": batch_seqs,
        "windows": n_windows,
        "ms": ms,
        "windows_per_s": per_s,
        "full_val_windows": full,
        "projected_full_val_s": full / per_s,
        "peak_memory_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
    }


def uniform_luts(vocab_size: int) -> Any:
    """Byte tables of one byte per token: throughput does not depend on their values."""
    from harness.pipeline.bpb import ByteLUTs

    return ByteLUTs(
        base_bytes=torch.ones(vocab_size, dtype=torch.int32),
        has_leading_space=torch.zeros(vocab_size, dtype=torch.bool),
        is_boundary=torch.zeros(vocab_size, dtype=torch.bool),
        vocab_size=vocab_size,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def bench_gpu(out_dir: Path = GPU_DIR, *, warm: int = 3, timed: int = 10, sliding_batches: int = 4) -> Path:
    """Time ``GPU_SUBMISSIONS`` on the CUDA device; write ``<out_dir>/<device-slug>.json``."""
    from harness.pipeline.submission import build_submission_config

    device = require_cuda()
    torch.backends.cuda.matmul.allow_tf32 = True  # as the runner does on CUDA
    torch.backends.cudnn.allow_tf32 = True
    results: dict[str, Any] = {}
    for name in GPU_SUBMISSIONS:
        with tempfile.TemporaryDirectory(prefix=f"pgolf-bench-{name}-") as tmp:
            train, tb = _gpu_train(
                build_submission_config(ROOT / "submissions" / name), device, Path(tmp), warm, timed
            )
            results[name] = {"train": train, "sliding": _gpu_sliding(tb, device, sliding_batches)}
            tb.close()
            del tb
            torch.cuda.empty_cache()
        t, s = results[name]["train"], results[name]["sliding"]
        print(
            f"{name}: {t['ms_per_step_median']:.1f} ms/step (min {t['ms_per_step_min']:.1f}) "
            f"at {t['global_batch_tokens']} "
            f"tokens x{t['grad_accum_steps']} accum, peak {t['peak_memory_allocated_mib']:.0f} MiB; sliding "
            f"{s['windows_per_s']:.1f} windows/s -> full val ~{s['projected_full_val_s']:.0f} s",
            flush=True,
        )
    info = device_info(device)
    doc = {
        "datetime": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "results": results,
    }
    path = Path(out_dir) / f"{_slug(info['cuda_name'])}.json"
    write_atomic(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    print(f"saved {path}")
    return path


# ------------------------------------------------------------------ the subcommand


def bench_main(args: argparse.Namespace) -> int:
    """``pgolf bench [--compare PATH] [--save] [--gpu] [--threshold PCT]``."""
    if args.gpu:
        bench_gpu()
        return 0
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    return bench_cpu(args.compare, args.save, threshold)
