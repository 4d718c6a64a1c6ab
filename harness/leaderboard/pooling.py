"""Which of our runs a statistic may pool: the rule behind every mean, standard deviation and
Welch test of our runs (`pgolf leaderboard`, `pgolf compare`).

Why: a mean over seeds estimates one configuration's score, and the Welch test of
`harness.leaderboard.significance` assumes independent samples of it. Pooling every run folder
of a submission broke both: invalid, over-budget and hand-edited runs were averaged in, runs of
other configs, tokenizers and eval strides were mixed, and 26 runs of seed 1337 counted as 26
seeds. The challenge asks for several seeds of one submission (openai/parameter-golf README,
"Submission Process"; docs/protocol.md §6.5), so:

1. **Left out, with the reason listed:** a run whose ``valid`` is not true, that is over the
   16,000,000-byte cap (JSON or log), whose JSON disagrees with its log or files
   (`harness.leaderboard.runfolder`: hand edits, cut logs), or that lacks a seed, a score or a
   fingerprint.
2. **Groups:** the other runs are grouped by (submission name, protocol, ``dataset_sha256``,
   ``tokenizer_sha256``, the sha256 of the resolved config without ``train.seed``, the
   shipped code's ``code_sha256``). Runs of one group differ only in their seed; anything
   else (a learning rate, the eval stride, the tokenizer, the code) makes another group.
3. **One run per seed:** within a group the newest run of each seed counts (latest
   ``date``, then the last run folder name); older runs of that seed are listed as left out.
4. **Non-record protocol:** a group whose runs record ``nonrecord_reasons``
   (``harness/pipeline/report.py``), or whose resolved config scores with an eval stride
   other than 64 (runs written before that field), is labelled as such (`non_record_reason`)
   and never ranked with records.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

from harness.api.config_checks import RECORD_EVAL_STRIDE
from harness.leaderboard.entry import NONRECORD_PROTOCOL_SUFFIX
from harness.leaderboard.records import BYTE_CAP, json_integer, json_number
from harness.leaderboard.runfolder import RunFolder, canonical_json


@dataclass(frozen=True)
class GroupKey:
    """What runs must share to be pooled (rule 2)."""

    name: str
    protocol: str
    dataset_sha256: str
    tokenizer_sha256: str
    config_sha256: str
    code_sha256: str


@dataclass
class Group:
    """The runs one statistic pools: one per seed, sorted by seed."""

    key: GroupKey
    runs: list[RunFolder] = field(default_factory=list)
    non_record: str = ""


@dataclass
class LeftOut:
    """A run no statistic counts, why, and the group it would have joined (None: none)."""

    run: RunFolder
    reason: str
    group: GroupKey | None = None


@dataclass
class Pool:
    """The outcome of the rule for a set of runs."""

    groups: list[Group] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)


def config_sha256(config: dict) -> str:
    """sha256 of the resolved config's canonical JSON with ``train.seed`` removed."""
    unseeded = copy.deepcopy(config)
    train = unseeded.get("train")
    if isinstance(train, dict):
        train.pop("seed", None)
    return hashlib.sha256(canonical_json(unseeded).encode("utf-8")).hexdigest()


def exclusion_reasons(run: RunFolder) -> list[str]:
    """Rule 1: every reason the run may not be pooled (empty when it may)."""
    data, reasons = run.data, []
    if data.get("valid") is not True:
        why = data.get("invalid_reasons")
        detail = "; ".join(str(x) for x in why) if isinstance(why, list) and why else "valid is not true"
        reasons.append(f"invalid ({detail})")
    sizes = [json_integer(data.get("bytes_total"))]
    sizes.append(run.log.total_bytes if run.log is not None else None)
    biggest = max((s for s in sizes if s is not None), default=None)
    if data.get("over_budget") is True or (biggest is not None and biggest > BYTE_CAP):
        reasons.append(f"over budget ({biggest} bytes > {BYTE_CAP:,})")
    if run.problems:
        reasons.append("not backed by its log or files: " + "; ".join(run.problems))
    if json_number(data.get("val_bpb")) is None:
        reasons.append("no val_bpb")
    if run.seed is None:
        reasons.append("no seed")
    for key in ("dataset_sha256", "tokenizer_sha256"):
        if not run.fingerprint(key):
            reasons.append(f"no {key}")
    return reasons


def group_key(run: RunFolder) -> GroupKey:
    """Rule 2's key of a run that passed rule 1 (its config and fingerprints are known)."""
    code = run.data.get("code_sha256")
    return GroupKey(
        name=run.submission,
        protocol=str(run.data.get("protocol") or "unknown"),
        dataset_sha256=run.fingerprint("dataset_sha256") or "",
        tokenizer_sha256=run.fingerprint("tokenizer_sha256") or "",
        config_sha256=config_sha256(run.config or {}),
        code_sha256=code if isinstance(code, str) else "",
    )


def non_record_reason(run: RunFolder) -> str:
    """Rule 4: why the run's scoring protocol is not the records' ("" when it is): its
    ``nonrecord_reasons``, else a stride other than the record one in its resolved config,
    else a ``…_nonrecord`` protocol."""
    reasons = run.data.get("nonrecord_reasons")
    if isinstance(reasons, list) and reasons:
        return "; ".join(str(r) for r in reasons)
    stride = run.eval_stride()
    if stride != RECORD_EVAL_STRIDE:
        return f"eval stride {stride}, records use {RECORD_EVAL_STRIDE}"
    protocol = run.data.get("protocol")
    if isinstance(protocol, str) and protocol.endswith(NONRECORD_PROTOCOL_SUFFIX):
        return f"protocol {protocol}"
    return ""


def _newest_first(run: RunFolder) -> tuple[str, str]:
    date = run.data.get("date")
    return (date if isinstance(date, str) else "", run.path.name)


def pool(runs: list[RunFolder]) -> Pool:
    """Apply rules 1-4 to ``runs``: the groups (sorted by key) and the runs left out."""
    out = Pool()
    groups: dict[GroupKey, Group] = {}
    for run in sorted(runs, key=_newest_first, reverse=True):
        reasons = exclusion_reasons(run)
        if reasons:
            out.left_out.append(LeftOut(run, "; ".join(reasons)))
            continue
        key = group_key(run)
        group = groups.setdefault(key, Group(key, non_record=non_record_reason(run)))
        counted = next((r for r in group.runs if r.seed == run.seed), None)
        if counted is not None:
            out.left_out.append(
                LeftOut(run, f"seed {run.seed} counted once: run {counted.path.name} is newer", key)
            )
            continue
        group.runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: _seed_order(r.seed or ""))
    out.groups = sorted(groups.values(), key=lambda g: tuple(vars(g.key).values()))
    out.left_out.sort(key=lambda x: (x.run.submission, x.run.path.name))
    return out


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.isdigit() and len(seed) <= 18 else (1 << 62, seed)
