"""One of our run folders (``submissions/<name>/runs/<run_id>/``) read for the leaderboard, and
checked against itself: does ``submission.json`` say what ``train.log`` shows, and do the
shipped files that are still there hash to what it records?

Why: ``submission.json`` is plain text anyone can edit, while the published ``train.log`` holds
the resolved config, the fingerprints, the score lines, the byte counts and the run's own
verdict (docs/protocol.md §9.1). The same idea as `harness.leaderboard.records` recomputing
an upstream record's score from its logs (``json_disagrees``), and as ``pgolf verify``'s hash
checks (`harness.tools.verify`), but cheap enough to run on every run of every submission.

What is compared (each disagreement is a "problem"; a run with one is never averaged in):

* ``val_bpb`` with the log's headline line (its test-time-training line, else its sliding
  window line, else its roundtrip line, ``_exact`` preferred: the rule of
  ``harness/pipeline/report.py`` read as `harness.leaderboard.logparse` classifies lines) and
  with its closing ``submission: … val_bpb:… valid:…`` line, to the 8 decimals the log prints;
* ``valid`` with that closing line; ``bytes_total`` with ``Total submission size``;
  ``bytes_code`` with ``Code size``; ``protocol`` and the fingerprints with the ``protocol:…
  dataset_sha256:… tokenizer_sha256:…`` line (the log prints the first 16 hex digits);
  ``seed``, ``eval_stride`` and an empty ``nonrecord_reasons`` with the resolved config (the
  log's ``config:`` line);
* when present (local runs; published ones carry only the JSON and the log): ``config.json``
  equals the log's config, and the files named by ``artifact_file``/``code_file`` have the
  recorded sha256 and byte counts.

Only JSON and text are read (sizes capped); nothing is imported, run or unpickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api.config_checks import RECORD_EVAL_STRIDE
from harness.leaderboard.logparse import PROTOCOLS, LogSummary, final_score, parse_log
from harness.leaderboard.records import (
    MAX_JSON_BYTES,
    MAX_LOG_BYTES,
    RecordReadError,
    complete_lines,
    json_integer,
    json_number,
    read_json_limited,
    read_text_limited,
)

MAX_SHIPPED_BYTES = 64_000_000
"""Largest shipped file hashed (the cap is 16,000,000 bytes; a bigger file is reported, not read)."""

_CONFIG_LINE = "config:"
_DATA_LINE = re.compile(
    r"^val_tokens:\d+ .*?\bprotocol:(?P<protocol>\S+) .*?\bdataset_sha256:(?P<dataset>[0-9a-f]+) "
    r".*?\btokenizer_sha256:(?P<tokenizer>[0-9a-f]+)(?:\s|$)"
)
_CLOSING_LINE = re.compile(r"^submission:.* val_bpb:(?P<bpb>\S+) valid:(?P<valid>True|False)\s*$")


@dataclass
class LogFacts:
    """What a pgolf ``train.log`` says beyond `logparse.LogSummary`."""

    config: dict[str, Any] | None = None
    protocol: str | None = None
    dataset_prefix: str | None = None
    tokenizer_prefix: str | None = None
    closing_bpb: float | None = None
    closing_valid: bool | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class RunFolder:
    """One run folder: its JSON, its log and what checking them found."""

    path: Path
    data: dict[str, Any]
    log: LogSummary | None = None
    facts: LogFacts = field(default_factory=LogFacts)
    problems: list[str] = field(default_factory=list)
    """Disagreements between the JSON, the log and the files (hand edits, truncation)."""

    @property
    def submission(self) -> str:
        """The submission's name (JSON ``name``, else the folder above ``runs/``)."""
        name = self.data.get("name")
        return name.strip() if isinstance(name, str) and name.strip() else self.path.parents[1].name

    @property
    def seed(self) -> str | None:
        seed = self.data.get("seed")
        return None if seed is None or isinstance(seed, (bool, dict, list)) else str(seed)

    @property
    def config(self) -> dict[str, Any] | None:
        return self.facts.config

    def fingerprint(self, key: str) -> str | None:
        """``dataset_sha256``/``tokenizer_sha256`` from the JSON, else the log's 16-digit prefix."""
        value = self.data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
        return self.facts.dataset_prefix if key == "dataset_sha256" else self.facts.tokenizer_prefix

    def eval_stride(self) -> int | None:
        """The resolved config's ``eval.eval_stride`` (None when the config is unknown)."""
        section = (self.config or {}).get("eval")
        return json_integer(section.get("eval_stride")) if isinstance(section, dict) else None


# ----------------------------------------------------------------------------- reading


def read_log_facts(text: str) -> LogFacts:
    """The config, data and closing lines of a pgolf log (the last of each wins)."""
    facts = LogFacts()
    configs: set[str] = set()
    for line in text.splitlines():
        if line.startswith(_CONFIG_LINE + "{"):
            try:
                config = json.loads(line[len(_CONFIG_LINE) :])
            except (ValueError, RecursionError):
                facts.problems.append("train.log: its config line is not valid JSON")
                continue
            if isinstance(config, dict):
                facts.config = config
                configs.add(canonical_json(config))
        elif m := _DATA_LINE.match(line):
            facts.protocol, facts.dataset_prefix = m.group("protocol"), m.group("dataset")
            facts.tokenizer_prefix = m.group("tokenizer")
        elif m := _CLOSING_LINE.match(line):
            facts.closing_bpb = json_number(_float(m.group("bpb")))
            facts.closing_valid = m.group("valid") == "True"
    if len(configs) > 1:
        facts.problems.append(f"train.log has {len(configs)} different config lines")
    return facts


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: equal configs give equal text whatever their key order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def read_run_folder(json_path: Path) -> RunFolder:
    """Read ``submission.json`` (`RecordReadError` naming it when unreadable: our own files
    must be well formed) and ``train.log`` beside it, then `check` them."""
    run = RunFolder(json_path.parent, read_json_limited(json_path, MAX_JSON_BYTES))
    log_path = run.path / "train.log"
    try:
        text = complete_lines(read_text_limited(log_path, MAX_LOG_BYTES))
    except FileNotFoundError:
        run.problems.append(f"{log_path.name} missing")
        return run
    except (RecordReadError, OSError) as exc:
        run.problems.append(f"{log_path.name} unreadable ({exc})")
        return run
    run.log, run.facts = parse_log(text), read_log_facts(text)
    check(run)
    return run


# ----------------------------------------------------------------------------- checks


def _shown(value: Any) -> str:
    """A JSON value for a message, cut short: submitted values can be any size."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _same_bpb(a: float | None, b: float | None) -> bool:
    """Equal to the 8 decimals the log prints (the JSON keeps full precision)."""
    return a is not None and b is not None and abs(round(a, 8) - b) <= 5e-9


def check(run: RunFolder) -> None:
    """Fill ``run.problems`` with every disagreement between the JSON, the log and the files."""
    data, facts, log = run.data, run.facts, run.log
    assert log is not None
    out = run.problems
    out += facts.problems
    bpb = json_number(data.get("val_bpb"))
    headline = next((line for p in PROTOCOLS if (line := final_score(log, p)) is not None), None)
    if headline is None or facts.closing_bpb is None:
        out.append("train.log has no final score or no closing submission line (unfinished or cut)")
    elif not (_same_bpb(bpb, headline.bpb) and _same_bpb(bpb, facts.closing_bpb)):
        out.append(
            f"submission.json val_bpb {_shown(data.get('val_bpb'))} but train.log shows {headline.bpb:.8f} "
            f"({headline.name})"
        )
    if facts.closing_valid is not None and data.get("valid") is not facts.closing_valid:
        shown = _shown(data.get("valid"))
        out.append(f"submission.json valid {shown} but train.log says valid:{facts.closing_valid}")
    for key, logged, what in (
        ("bytes_total", log.total_bytes, "Total submission size"),
        ("bytes_code", log.code_bytes, "Code size"),
    ):
        if logged is not None and json_integer(data.get(key)) != logged:
            out.append(f"submission.json {key} {_shown(data.get(key))} but train.log {what} is {logged}")
    _check_data_line(run)
    _check_config(run)
    _check_files(run)


def _check_data_line(run: RunFolder) -> None:
    data, facts, out = run.data, run.facts, run.problems
    if facts.protocol is None:
        out.append("train.log has no protocol/fingerprint line")
        return
    if data.get("protocol") != facts.protocol:
        out.append(
            f"submission.json protocol {_shown(data.get('protocol'))} but train.log says {facts.protocol}"
        )
    for key, prefix in (
        ("dataset_sha256", facts.dataset_prefix),
        ("tokenizer_sha256", facts.tokenizer_prefix),
    ):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and value.lower().startswith(prefix or "")):
            out.append(f"submission.json {key} {str(value)[:16]!r}… but train.log says {prefix}…")


def _check_config(run: RunFolder) -> None:
    data, config, out = run.data, run.config, run.problems
    if config is None:
        out.append("train.log has no resolved config line")
        return
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    if str(train.get("seed")) != str(data.get("seed")):
        shown = _shown(data.get("seed"))
        out.append(f"submission.json seed {shown} but the logged config has {_shown(train.get('seed'))}")
    stride = json_integer(data.get("eval_stride"))
    if stride is not None and stride != run.eval_stride():
        out.append(f"submission.json eval_stride {stride} but the logged config has {run.eval_stride()}")
    if data.get("nonrecord_reasons") == [] and run.eval_stride() != RECORD_EVAL_STRIDE:
        out.append(
            f"submission.json nonrecord_reasons is empty but the logged config scores at stride "
            f"{run.eval_stride()}, not {RECORD_EVAL_STRIDE}"
        )
    path = run.path / "config.json"
    if path.is_file():
        try:
            local = read_json_limited(path, MAX_JSON_BYTES)
        except (RecordReadError, OSError) as exc:
            out.append(f"config.json unreadable ({exc})")
            return
        if canonical_json(local) != canonical_json(config):
            out.append("config.json differs from the config line of train.log")


def _check_files(run: RunFolder) -> None:
    """The shipped files still in the folder hash to the recorded sha256 and sizes."""
    for name_key, sha_key, size_key in (
        ("artifact_file", "artifact_sha256", "bytes_model"),
        ("code_file", "code_sha256", "bytes_code"),
    ):
        name = run.data.get(name_key)
        if name is None:
            continue
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
            run.problems.append(f"submission.json {name_key} {_shown(name)} is not a file name")
            continue
        path = run.path / name
        if not path.is_file() or path.is_symlink():
            continue  # published runs ship without it: nothing to hash
        size = path.stat().st_size
        if size != json_integer(run.data.get(size_key)):
            run.problems.append(
                f"{name} is {size} bytes but submission.json {size_key} is {_shown(run.data.get(size_key))}"
            )
            continue
        if size > MAX_SHIPPED_BYTES:
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        recorded = run.data.get(sha_key)
        if digest != recorded:
            run.problems.append(
                f"{name} sha256 {digest[:16]}… but submission.json {sha_key} is {recorded!r:.20}"
            )
