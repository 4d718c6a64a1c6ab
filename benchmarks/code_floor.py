"""What each submission's shipped train_gpt.py spends its bytes on, by role (seconds, CPU).

Usage: ``python benchmarks/code_floor.py`` (output committed as ``benchmarks/code_floor.txt``).

Each submission is bundled as the main job ships it (minified, as `benchmarks/shell_codecs.py`
does) and its embedded modules are grouped by the job they do. Every group is compressed alone
with the submission's own shell codec, and so are two unions: the *computation* (model,
optimizer and schedule, quantizer and codec, artifact format, data reading, the training step,
the distributed setup and the scoring math, which together decide the losses, the artifact
bytes and the score) and the *orchestration* (configuration, plugin registry and hooks, run
phases, logging, flags, reports, errors). The computation column is a floor: a shipped file
that kept every computing module as written and ran it with no orchestration at all would
still cost about that many bytes (before its shell and bootstrap), so a byte target below it
cannot be met by moving orchestration out of the counted file; only by writing the computing
modules themselves for one configuration. Issue 13's targets are in the last column.
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

from harness.tools.bundle import bundle_submission
from harness.tools.bundle_report import default_extra_modules
from harness.tools.bundle_wrapper import compress, unwrap

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"baseline": 16_000, "12L_recycled": 24_000}

COMPUTATION = {
    "model": ("plugins/arch/",),
    "optimizer+schedule": (
        "plugins/optim/",
        "plugins/schedule/",
        "harness/api/warmdown.py",
        "harness/pipeline/grad_clip.py",
    ),
    "quantizer+codec": (
        "plugins/quant/",
        "plugins/compress/",
        "harness/api/quantization.py",
        "harness/api/bit_packing.py",
        "harness/api/zlib_stream.py",
        "harness/pipeline/calibration.py",
    ),
    "artifact format": (
        "harness/pipeline/artifact.py",
        "harness/pipeline/artifact_manifest.py",
        "harness/api/tensor_classes.py",
    ),
    "data reading": ("harness/pipeline/shards.py", "harness/pipeline/byte_data.py"),
    "training step": ("harness/pipeline/trainer.py",),
    "distributed": ("harness/pipeline/distributed.py",),
    "scoring math": ("harness/pipeline/eval.py", "harness/pipeline/bpb.py", "harness/pipeline/adaptation.py"),
}
"""Role -> path prefixes of the modules that do it; every other embedded module orchestrates."""


def role_of(origin: str) -> str:
    for role, prefixes in COMPUTATION.items():
        if origin.startswith(prefixes):
            return role
    return "orchestration"


def embedded_sources(inner: str) -> dict[str, str]:
    """{origin: minified source} of a bundle's text, read from its ``_pgolf_sources`` literal."""
    for node in ast.parse(inner).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_pgolf_sources":
            return ast.literal_eval(node.value)
    raise ValueError("the bundle holds no _pgolf_sources literal")


def main() -> None:
    subs = sorted(p.name for p in (ROOT / "submissions").iterdir() if (p / "train_gpt.py").is_file())
    roles = [*COMPUTATION, "orchestration"]
    print(f"| submission | shipped | {' | '.join(roles)} | computation | target |")
    print("|---|---:|" + "---:|" * (len(roles) + 2))
    with tempfile.TemporaryDirectory() as tmp:
        for name in subs:
            sub = ROOT / "submissions" / name
            extra = default_extra_modules(submission_dir=sub)
            info = bundle_submission(sub, Path(tmp) / f"{name}.py", compress=True, extra_modules=extra)
            written = unwrap(info.path.read_bytes(), 1 << 26)
            groups: dict[str, list[str]] = {role: [] for role in roles}
            for origin, source in embedded_sources(written.inner).items():
                groups[role_of(origin)].append(source)

            def size(texts: list[str], codec: str = written.codec) -> int:
                return len(compress(codec, "\n".join(texts).encode("utf-8"))) if texts else 0

            cells = [f"{size(groups[r]):,}" for r in roles]
            computing = size([s for r in COMPUTATION for s in groups[r]])
            target = f"{TARGETS[name]:,}" if name in TARGETS else ""
            row = [f"`{name}` ({written.codec})", f"{info.bytes:,}", *cells, f"{computing:,}", target]
            print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()
