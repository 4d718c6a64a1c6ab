"""``pgolf verify RUN_DIR``: re-check a finished run from its files alone, in a fresh process.

Why: a leaderboard row is only as good as the numbers in its ``submission.json``.
docs/pitfalls.md §2.1 and §1.1 record byte counts computed inside the run that disagreed with the
shipped files, and scores that could not be reproduced from the artifact. The challenge's
own review practice (upstream README: "reproducible", PR #560's ``LOAD_MODEL_PATH``
eval-only mode) is to re-run the final evaluation of the shipped artifact with the shipped
code. This module automates that review:

1. ``submission.json`` parses and holds the keys a check needs;
2. the shipped files exist and their sizes on disk are the claimed byte counts;
3. their sha256 equal the recorded ones (older runs record none: said so, not failed);
4. the artifact's header, manifest and payload digest are intact (`harness.pipeline.artifact`) and
   name the claimed quantizer/compressor;
5. the shipped bundle runs in a fresh interpreter, in an empty temporary folder, in
   eval-only mode on the same validation tokens (every scoring setting from the run's
   ``config.json`` passed explicitly with ``--set``, so no CPU profile or environment
   variable can change them), and resolves the run's own config: the bundle records the
   run's ``--set`` and environment overrides (``model.*`` included) and applies them;
6. its scores equal the claimed ones within ``BPB_TOLERANCE`` (same device and dtype), as the
   ``rerun_*`` checks: the bundle is submission code, so this shows reproducibility, not truth;
7. the re-run shipped the same artifact and bundle bytes;
8. the trusted scores (pgolf issue 11, `harness.tools.trusted_check`): the artifact scored in a
   fresh process that runs no submission code, rebuilt from installed plugins only and audited
   for the files it reads; the ``val_bpb``, ``roundtrip_val_bpb``, ``sliding_val_bpb``,
   ``val_tokens`` and ``val_bytes`` checks compare the claims with these.

Nothing in the run folder is written. Every check's detail is one line with long values cut
(their length and sha256 kept), so a failure prints a few lines whatever the re-run printed.
Exit codes for the CLI (`verify_main`): 0 every check passed, 1 a check failed, and a
`ConfigError` (status 2) when the folder is not a run folder.

Longer than 400 lines because it is one command (``pgolf verify``) whose checks above read the
same run folder and fill one report; split apart, a reviewer would have to read several modules
to know what a passing verify means.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api.config import ENV_OVERRIDES
from harness.api.errors import ConfigError, PgolfError
from harness.pipeline.artifact import config_from_json, verify_payload
from harness.pipeline.budget import BYTE_LIMIT
from harness.pipeline.shards import file_sha256
from harness.tools.trusted_check import check_trusted_scores

BPB_TOLERANCE = 1e-6
"""Largest accepted |claimed - re-measured| BPB (the issue's bound, same device and dtype)."""

SCORE_KEYS: tuple[str, ...] = ("roundtrip_val_bpb", "sliding_val_bpb", "val_bpb")
COUNT_KEYS: tuple[str, ...] = ("val_tokens", "val_bytes")
FINGERPRINT_KEYS: tuple[str, ...] = ("dataset_sha256", "tokenizer_sha256")
REQUIRED_KEYS: tuple[str, ...] = (
    *SCORE_KEYS,
    *COUNT_KEYS,
    "bytes_code",
    "bytes_model",
    "bytes_total",
    "over_budget",
    "artifact_file",
    "code_file",
)

# Config keys that decide which validation tokens are scored and how: passed explicitly to
# the re-run so the CPU smoke profile or the environment cannot re-size the evaluation.
_SCORING_KEYS: tuple[str, ...] = (
    "data.data_path",
    "data.tokenizer_path",
    "data.default_variant",
    "data.vocab_size",
    "train.train_seq_len",
    "train.grad_accum_steps",
    "train.seed",
)
# Fields verify sets on the re-run itself (or that say how a run is operated), not compared.
_SET_BY_VERIFY = frozenset(
    {
        "train.load_model_path",
        "data.data_path",
        "data.tokenizer_path",
        "train.checkpoint_every_minutes",
        "train.stop_after_step",
    }
)
# Launcher variables that would turn the re-run into a distributed rank or rename it.
_DROPPED_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RUN_ID",
)


@dataclass(frozen=True)
class Check:
    """One verification step: its name, verdict and a message naming file, field and values."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """``ok|FAIL name: detail``, the CLI's line for this check."""
        return f"{'ok' if self.ok else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class VerifyReport:
    """Every check run on ``run_dir``; ``ok`` when there is at least one and none failed."""

    run_dir: Path
    checks: list[Check] = field(default_factory=list)
    wall_s: float = 0.0
    """Seconds the whole verification took (the re-run included)."""

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        """The failed checks, in order."""
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str) -> bool:
        """Record a check (its detail cut short by `clip_detail`); returns its verdict so callers
        can stop early."""
        self.checks.append(Check(name, bool(ok), clip_detail(detail)))
        return bool(ok)


MAX_VALUE_CHARS = 120
"""A longer run of non-blank characters in a check's detail (a one-line bundle echoed in a
traceback, a config value) is cut to its start, its length and its sha256."""
_LONG_VALUE = re.compile(r"\S{" + str(MAX_VALUE_CHARS + 1) + ",}")
MAX_DETAIL_CHARS = 1200
"""A check's detail is cut at this length, with the length and sha256 of the whole."""


def _cut(text: str, keep: int) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
    return f"{text[:keep]}...[{len(text):,} chars, sha256 {digest}]"


def clip_detail(detail: str) -> str:
    """``detail`` on one line, long values cut (`MAX_VALUE_CHARS`, `MAX_DETAIL_CHARS`), so a
    failed check prints a few lines at most whatever the re-run printed."""
    one_line = " | ".join(part for part in detail.splitlines() if part.strip()) or detail
    short = _LONG_VALUE.sub(lambda m: _cut(m.group(0), 48), one_line)
    return short if len(short) <= MAX_DETAIL_CHARS else _cut(short, MAX_DETAIL_CHARS - 60)


# ---------------------------------------------------------------- entry points


def verify_run(run_dir: Path, *, python: str = sys.executable, timeout_s: float = 3600) -> VerifyReport:
    """Verify the run folder ``run_dir`` (see the module docstring for the checks).

    Raises `ConfigError` only when ``run_dir`` is not a run folder (no such folder, or no
    ``submission.json`` in it); every other problem is a failed `Check` in the report.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    _require_run_folder(run_dir)
    report = VerifyReport(run_dir)
    record = _check_submission_json(report, run_dir / "submission.json")
    if record is not None:
        _verify_record(report, run_dir, record, python, timeout_s)
    report.wall_s = time.perf_counter() - t0
    return report


def verify_main(
    run_dir: Path,
    *,
    python: str = sys.executable,
    timeout_s: float = 3600,
    out: Callable[[str], None] = print,
) -> int:
    """The CLI contract: print every check as ``ok|FAIL name: detail``; 0 all pass, 1 one failed.

    A folder that is not a run folder raises `ConfigError` (the CLI prints it, exit status 2).
    """
    report = verify_run(run_dir, python=python, timeout_s=timeout_s)
    for check in report.checks:
        out(check.line())
    verdict = "verified" if report.ok else f"FAILED ({len(report.failures())} of {len(report.checks)} checks)"
    out(f"{report.run_dir}: {verdict} in {report.wall_s:.1f}s")
    return 0 if report.ok else 1


def _require_run_folder(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a folder (expected a run folder holding submission.json)")
    if not (run_dir / "submission.json").is_file():
        raise ConfigError(f"{run_dir} has no submission.json: not a run folder")


def _verify_record(
    report: VerifyReport, run_dir: Path, record: dict[str, Any], python: str, timeout_s: float
) -> None:
    files = _check_files(report, run_dir, record)
    if files is None:
        report.add("rerun", False, "skipped: the shipped files named by submission.json are missing")
        return
    code, artifact = files
    _check_bytes(report, record, code, artifact)
    _check_hash(report, record, "code_sha256", code)
    _check_hash(report, record, "artifact_sha256", artifact)
    intact = _check_artifact(report, record, artifact)
    sets = _scoring_sets(report, run_dir / "config.json")
    if not intact or sets is None:
        report.add(
            "rerun",
            False,
            "skipped: " + ("the artifact is not intact" if not intact else "config.json is unusable"),
        )
        return
    _rerun_and_compare(report, record, code, artifact, sets, python, timeout_s)
    check_trusted_scores(report, run_dir, record, artifact, python, timeout_s)


# ---------------------------------------------------------------- checks on the files


def _check_submission_json(report: VerifyReport, path: Path) -> dict[str, Any] | None:
    """(1) the record parses as a JSON object holding every key the checks read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.add("submission_json", False, f"{path} does not parse as JSON: {exc}")
        return None
    if not isinstance(record, dict):
        report.add("submission_json", False, f"{path}: expected a JSON object, got {type(record).__name__}")
        return None
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        report.add("submission_json", False, f"{path}: missing key(s) {', '.join(missing)}")
        return None
    report.add("submission_json", True, f"{path.name} parses; all {len(REQUIRED_KEYS)} required keys present")
    return record


def _shipped_path(run_dir: Path, record: dict[str, Any], key: str) -> Path | None:
    name = record[key]
    # A bare file name only: a record must not point the checks outside its own folder.
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        return None
    return run_dir / name


def _check_files(report: VerifyReport, run_dir: Path, record: dict[str, Any]) -> tuple[Path, Path] | None:
    """(2a) ``code_file`` and ``artifact_file`` name files present in the run folder."""
    paths = {key: _shipped_path(run_dir, record, key) for key in ("code_file", "artifact_file")}
    bad = [
        f"submission.json {key}={record[key]!r} "
        + ("is not a bare file name" if p is None else "does not exist")
        for key, p in paths.items()
        if p is None or not p.is_file()
    ]
    if bad:
        report.add("files", False, "; ".join(bad))
        return None
    report.add("files", True, f"{record['code_file']} and {record['artifact_file']} present")
    return paths["code_file"], paths["artifact_file"]


def _check_bytes(report: VerifyReport, record: dict[str, Any], code: Path, artifact: Path) -> None:
    """(2b) byte counts re-measured from disk; the budget verdict re-derived from them."""
    sizes = {
        "bytes_code": (code, os.path.getsize(code)),
        "bytes_model": (artifact, os.path.getsize(artifact)),
    }
    for key, (path, measured) in sizes.items():
        claimed = record[key]
        ok = _is_int(claimed) and claimed == measured
        report.add(
            key,
            ok,
            f"submission.json {key}: claimed {claimed!r}, measured {measured} (size of {path.name} on disk)",
        )
    total = sizes["bytes_code"][1] + sizes["bytes_model"][1]
    claimed_total = record["bytes_total"]
    report.add(
        "bytes_total",
        _is_int(claimed_total) and claimed_total == total,
        f"submission.json bytes_total: claimed {claimed_total!r}, measured {total} (code + artifact on disk)",
    )
    over = total > BYTE_LIMIT
    claimed_over = record["over_budget"]
    report.add(
        "over_budget",
        claimed_over is over,
        f"submission.json over_budget: claimed {claimed_over!r}, "
        f"measured {over} ({total} vs limit {BYTE_LIMIT})",
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_hash(report: VerifyReport, record: dict[str, Any], key: str, path: Path) -> None:
    """(3) the file's sha256 against the recorded one; older runs record none."""
    measured = file_sha256(path)
    claimed = record.get(key)
    if claimed is None:
        report.add(key, True, f"not recorded in submission.json; {path.name} sha256 is {measured}")
        return
    report.add(
        key,
        claimed == measured,
        f"submission.json {key}: claimed {claimed}, measured {measured} ({path.name})",
    )


def _check_artifact(report: VerifyReport, record: dict[str, Any], artifact: Path) -> bool:
    """(4) header and manifest validate, the payload matches its digest, components match."""
    try:
        manifest = verify_payload(artifact)
    except PgolfError as exc:
        report.add("artifact_format", False, str(exc))
        return False
    report.add(
        "artifact_format",
        True,
        f"{artifact.name}: header, manifest and payload digest valid ({manifest['format']})",
    )
    _check_components(report, record, artifact, manifest)
    return True


def _check_components(report: VerifyReport, record: dict[str, Any], artifact: Path, manifest: dict) -> None:
    """The manifest's quantizer/compressor are the claimed ones.

    The manifest holds registry names and configs; submission.json holds the built
    components' tags (the ``intn`` quantizer calls itself int5 or int6), so the component is
    rebuilt from the manifest through the plugin registry and its tag compared.
    """
    for kind in ("quantizer", "compressor"):
        spec, claimed = manifest[kind], record.get(kind)
        try:
            tag = _built_tag(kind, spec["name"], spec["config"])
        except PgolfError as exc:
            report.add(
                f"artifact_{kind}",
                False,
                f"{artifact.name} manifest {kind} {spec['name']!r} cannot be rebuilt: {exc}",
            )
            continue
        report.add(
            f"artifact_{kind}",
            claimed == tag,
            f"{artifact.name} manifest {kind} {spec['name']!r} (tag {tag!r}); "
            f"submission.json {kind}: claimed {claimed!r}",
        )


def _built_tag(kind: str, name: str, config: dict) -> str:
    from harness.pipeline.plugin_manager import (
        full_manager,  # the registry: plugins load only when a check needs them
    )

    registry = full_manager().registry
    return str(config_from_json(registry.get(kind, name).config_cls, config, registry).build().name)


# ---------------------------------------------------------------- the re-run


def _scoring_sets(report: VerifyReport, path: Path) -> list[str] | None:
    """``--set KEY=VALUE`` items pinning every scoring setting to the run's resolved config."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        values = {key: _lookup(config, key) for key in _SCORING_KEYS}
        for k, v in config["eval"].items():
            if isinstance(v, dict):  # a component (eval.adapter): the bundle builds it, its fields are pinned
                values.update({f"eval.{k}.{f}": fv for f, fv in v.items() if f != "_class"})
            else:
                values[f"eval.{k}"] = v
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        report.add(
            "config_json", False, f"{path}: cannot read the scoring settings ({type(exc).__name__}: {exc})"
        )
        return None
    report.add("config_json", True, f"{path.name}: {len(values)} scoring settings passed to the re-run")
    return [f"{key}={_set_value(key, value)}" for key, value in values.items()]


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    section, key = dotted.split(".")
    return config[section][key]


def _set_value(key: str, value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if key in ("data.data_path", "data.tokenizer_path"):
        # Relative paths were relative to where the run started; absolute is the best guess.
        return str(Path(value).resolve())
    return repr(value) if isinstance(value, float) else str(value)


def _child_env() -> dict[str, str]:
    """The caller's environment (PGOLF_CACHE_DIR included) minus anything that re-sizes or
    re-routes the run."""
    drop = set(ENV_OVERRIDES) | set(_DROPPED_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _rerun_and_compare(
    report: VerifyReport,
    record: dict[str, Any],
    code: Path,
    artifact: Path,
    sets: list[str],
    python: str,
    timeout_s: float,
) -> None:
    """(5)-(7) run the bundle eval-only in an empty folder, then compare its outputs."""
    run_id = f"verify_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="pgolf_verify_") as tmp:
        work = Path(tmp)
        shutil.copyfile(code, work / "train_gpt.py")
        argv = [python, "train_gpt.py", "--run-id", run_id, "--set", f"train.load_model_path={artifact}"]
        for item in sets:
            argv += ["--set", item]
        rerun = _launch(report, argv, work, timeout_s)
        out_dir = work / "runs" / run_id
        _compare_configs(report, code.parent / "config.json", out_dir / "config.json")
        if rerun is None:
            return
        fresh = _read_rerun(report, out_dir / "submission.json")
        if fresh is None:
            return
        _compare_scores(report, record, fresh)
        _compare_bytes(report, out_dir / str(fresh.get("artifact_file")), artifact, "rerun_artifact_bytes")
        _compare_bytes(report, out_dir / str(fresh.get("code_file")), code, "rerun_code_bytes")


def _launch(
    report: VerifyReport, argv: list[str], cwd: Path, timeout_s: float
) -> subprocess.CompletedProcess[str] | None:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=cwd, env=_child_env(), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        report.add(
            "rerun", False, f"the eval-only re-run of train_gpt.py did not finish within {timeout_s:.0f}s"
        )
        return None
    except OSError as exc:
        report.add("rerun", False, f"cannot start {argv[0]}: {exc}")
        return None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        report.add(
            "rerun", False, f"train_gpt.py eval-only re-run exited {proc.returncode}: {' | '.join(tail)}"
        )
        return None
    report.add("rerun", True, f"train_gpt.py re-ran eval-only in a fresh process in {seconds:.1f}s")
    return proc


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}


def _compare_configs(report: VerifyReport, original: Path, rerun: Path) -> None:
    """(5b) the shipped bundle, run alone, resolved the run's own config (``--set`` and
    environment overrides included: the bundle records them); what verify sets itself aside."""
    if not rerun.is_file():
        return  # the re-run stopped before writing one; the rerun check says why
    try:
        old, new = (_flat(json.loads(p.read_text(encoding="utf-8"))) for p in (original, rerun))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.add("rerun_config", False, f"cannot compare config.json with the re-run's ({exc})")
        return
    differ = [
        f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
        for key in sorted(set(old) | set(new))
        if key not in _SET_BY_VERIFY and old.get(key, "<absent>") != new.get(key, "<absent>")
    ]
    report.add(
        "rerun_config",
        not differ,
        "the shipped train_gpt.py resolved the run's config.json"
        if not differ
        else f"the shipped train_gpt.py resolves another config than config.json ({len(differ)} fields; "
        f"a bundle from before overrides were recorded?): {'; '.join(differ[:5])}",
    )


def _read_rerun(report: VerifyReport, path: Path) -> dict[str, Any] | None:
    try:
        fresh = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        report.add("rerun_output", False, f"the re-run wrote no readable submission.json ({exc})")
        return None
    return fresh


def _compare_scores(report: VerifyReport, record: dict[str, Any], fresh: dict[str, Any]) -> None:
    """(6) BPB within the tolerance; token and byte counts and data fingerprints exactly."""
    where = (
        ""
        if fresh.get("device") == record.get("device")
        else (
            f" [claimed on {record.get('device')!r}, re-run on {fresh.get('device')!r}: "
            "the bound assumes the same device]"
        )
    )
    for key in SCORE_KEYS:
        claimed, measured = record[key], fresh.get(key)
        ok = _close(claimed, measured)
        report.add(
            f"rerun_{key}",
            ok,
            f"submission.json {key}: claimed {claimed!r}, re-measured {measured!r} "
            f"(tolerance {BPB_TOLERANCE:g}){'' if ok else where}",
        )
    for key in COUNT_KEYS:
        claimed, measured = record[key], fresh.get(key)
        report.add(
            f"rerun_{key}",
            claimed == measured,
            f"submission.json {key}: claimed {claimed!r}, re-measured {measured!r}",
        )
    for key in FINGERPRINT_KEYS:
        if key in record:
            claimed, measured = record[key], fresh.get(key)
            report.add(
                key, claimed == measured, f"submission.json {key}: claimed {claimed}, re-measured {measured}"
            )


def _close(claimed: Any, measured: Any) -> bool:
    if claimed is None or measured is None:
        return claimed is None and measured is None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (claimed, measured)):
        return False
    return math.isfinite(claimed) and math.isfinite(measured) and abs(claimed - measured) <= BPB_TOLERANCE


def _compare_bytes(report: VerifyReport, shipped: Path, original: Path, name: str) -> None:
    """(7) the re-run shipped exactly the original file."""
    if not shipped.is_file():
        report.add(name, False, f"the re-run shipped no {shipped.name} (expected a copy of {original.name})")
        return
    same = shipped.read_bytes() == original.read_bytes()
    report.add(
        name,
        same,
        f"re-run {shipped.name} {'equals' if same else 'differs from'} {original.name} "
        f"(sha256 {file_sha256(shipped)[:16]} vs {file_sha256(original)[:16]})",
    )
