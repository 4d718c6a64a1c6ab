"""`pgolf verify`'s trusted checks: the claimed scores against `harness.tools.trusted_score`'s.

pgolf issue 11. The shipped ``train_gpt.py`` is submission code, so its eval-only re-run (still
done by `harness.tools.verify`, as a reproducibility check) cannot vouch for a score: it ran the
same patches as the run. Here the artifact is scored by the trusted scorer in a fresh interpreter
that never opens the submission's code, under a file-access audit, and verify's score checks
(``val_bpb``, ``roundtrip_val_bpb``, ``sliding_val_bpb``, ``val_tokens``, ``val_bytes``) compare
the claims with that score. Checks added: ``trusted_scorer`` (it ran and could rebuild the model
from installed plugins; else "unverifiable", naming the component), ``file_access`` (it read only
the artifact, the validation data, the tokenizer and installed code), then one per score key.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Protocol

from harness.tools.trusted_score import RESULT_PREFIX

TOLERANCE = 1e-6
"""Largest accepted |claimed - trusted| BPB (same device and dtype), as for the re-run."""
TRUSTED_SCORE_KEYS: tuple[str, ...] = ("roundtrip_val_bpb", "sliding_val_bpb", "val_bpb")
TRUSTED_COUNT_KEYS: tuple[str, ...] = ("val_tokens", "val_bytes")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class Report(Protocol):
    """What the checks write into (`harness.tools.verify.VerifyReport`)."""

    def add(self, name: str, ok: bool, detail: str) -> bool: ...


def data_files(config_json: dict[str, Any]) -> tuple[Path, Path]:
    """The validation data folder and tokenizer a run used: its own, or the built-in default dataset's."""
    data = config_json["data"]
    if data.get("data_path"):
        return Path(data["data_path"]).resolve(), Path(data["tokenizer_path"]).resolve()
    from harness.datasets.default import ensure_default_dataset

    ds = ensure_default_dataset(progress=False, variant=data.get("default_variant", "sp1024"))
    tok = Path(data["tokenizer_path"]) if data.get("tokenizer_path") else ds.tokenizer_path
    return Path(ds.data_path).resolve(), tok.resolve()


def _env() -> dict[str, str]:
    """The caller's environment with the harness's own folder first on ``PYTHONPATH`` (installed plugins
    stay reachable through the rest of it); launcher variables that would make it a rank are dropped."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_trusted_scorer(
    artifact: Path,
    config: Path,
    data: Path,
    tokenizer: Path,
    adapter: str | None,
    python: str,
    timeout_s: float,
) -> dict[str, Any]:
    """The trusted scorer's JSON result, or ``{"error": ...}`` when it printed none."""
    argv = [python, "-m", "harness.tools.trusted_score", str(artifact), "--config", str(config)]
    argv += ["--data-path", str(data), "--tokenizer", str(tokenizer)]
    argv += ["--adapter", adapter] if adapter else []
    with tempfile.TemporaryDirectory(prefix="pgolf_trusted_") as tmp:  # an empty cwd: nothing to import there
        try:
            proc = subprocess.run(
                argv, cwd=tmp, env=_env(), capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return {"error": f"the trusted scorer did not finish within {timeout_s:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
    return {"error": f"the trusted scorer exited {proc.returncode} without a result: {tail}"}


def _headline(result: dict[str, Any]) -> float | None:
    """The headline BPB by the run's rule (`harness.pipeline.report`): TTT, else sliding, else roundtrip."""
    for key in ("ttt_val_bpb", "sliding_val_bpb", "roundtrip_val_bpb"):
        if result.get(key) is not None:
            return result[key]
    return None


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return ok and math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TOLERANCE


def check_trusted_scores(
    report: Report, run_dir: Path, record: dict[str, Any], artifact: Path, python: str, timeout_s: float
) -> None:
    """Score ``artifact`` with the trusted scorer and compare every claimed score with it."""
    config = run_dir / "config.json"
    try:
        data, tokenizer = data_files(json.loads(config.read_text(encoding="utf-8")))
    except Exception as exc:  # noqa: BLE001 - any reason is a failed check, named
        report.add("trusted_scorer", False, f"{config}: cannot resolve the validation data ({exc})")
        return
    result = run_trusted_scorer(
        artifact, config, data, tokenizer, record.get("ttt_adapter"), python, timeout_s
    )
    problem = result.get("unverifiable") or result.get("error")
    label = "unverifiable" if result.get("unverifiable") else "failed"
    report.add(
        "trusted_scorer",
        problem is None,
        f"{label}: {problem}"
        if problem
        else "scored the artifact in a fresh process that ran no submission code",
    )
    reads = result.get("file_access")
    if reads is not None:
        report.add(
            "file_access",
            not reads,
            "the scorer read only the artifact, the validation data, the tokenizer and installed code"
            if not reads
            else f"scoring {artifact.name} read file(s) that are neither counted nor the validation data, "
            f"the tokenizer or installed code: {', '.join(reads[:5])}",
        )
    if problem:
        return
    trusted = {**result, "val_bpb": _headline(result)}
    for key in TRUSTED_SCORE_KEYS:
        ok = _close(record.get(key), trusted[key])
        report.add(
            key,
            ok,
            f"submission.json {key}: claimed {record.get(key)!r}, trusted {trusted[key]!r} "
            f"(tolerance {TOLERANCE:g})",
        )
    for key in TRUSTED_COUNT_KEYS:
        report.add(
            key,
            record.get(key) == trusted[key],
            f"submission.json {key}: claimed {record.get(key)!r}, trusted {trusted[key]!r}",
        )
