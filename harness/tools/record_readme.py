"""The ``README.md`` of a packaged record folder (`harness.tools.package`), and the
significance section that ``pgolf compare <our folder> <upstream folder>`` writes into it.

The sections follow what upstream's record READMEs carry (e.g.
``records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT``): the
headline with the seed count and std, a per-seed results table, the techniques, the command
that reproduces the runs, a compliance list and the included files. Everything here is
computed from the runs' ``submission.json`` and ``config.json``; nothing is typed by hand.

The significance section sits between two HTML comments (`SIGNIFICANCE_START`,
`SIGNIFICANCE_END`); `write_significance` replaces what is between them, so comparing again
updates the section instead of adding another, and a README without the markers (one
not written by the packager) is never edited.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from harness.api.errors import DataError
from harness.api.fileio import write_atomic
from harness.leaderboard.entry import Entry
from harness.leaderboard.records import BYTE_CAP, import_records, is_record_folder
from harness.leaderboard.significance import compare

SIGNIFICANCE_START = "<!-- pgolf:significance:start -->"
SIGNIFICANCE_END = "<!-- pgolf:significance:end -->"
_COMPONENT_KEYS = ("model", "optimizer", "schedule", "quantizer", "compressor")


def _num(value: Any, digits: int = 8) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _check(ok: Any) -> str:
    return "[x]" if ok is True else "[ ]"


def _results(record: dict[str, Any]) -> list[str]:
    lines = [
        "| Seed | val_bpb | val_loss | bytes_total | steps | train_time (ms) | eval_time (ms) | log |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for seed, res in record["seed_results"].items():
        lines.append(
            f"| {seed} | {_num(res['val_bpb'])} | {_num(res['val_loss'])} | {_num(res['bytes_total'])} | "
            f"{_num(res.get('steps'))} | {_num(res.get('train_time_ms'), 0)} | "
            f"{_num(res.get('eval_time_ms'), 0)} | `train_seed{seed}.log` |"
        )
    lines.append(
        f"| **Mean** | **{_num(record['val_bpb'])}** | {_num(record['val_loss'])} | "
        f"max {_num(record['bytes_total'])} | | | | |"
    )
    lines.append(f"| **Std** | {_num(record['val_bpb_std'])} | {_num(record['val_loss_std'])} | | | | | |")
    return lines


def _fields(value: dict[str, Any]) -> str:
    shown = [f"{k}={v}" for k, v in value.items() if k not in ("_class", "components")]
    return ", ".join(shown)


def _techniques(config: dict[str, Any]) -> list[str]:
    lines = []
    for key in _COMPONENT_KEYS:
        value = config.get(key)
        if not isinstance(value, dict):
            lines.append(f"- **{key}**: none (the harness default)")
            continue
        lines.append(f"- **{key}**: `{value['_class']}` ({_fields(value)})")
        for comp in value.get("components", []) if key == "model" else []:
            lines.append(f"  - component `{comp['_class']}` ({_fields(comp)})")
    for plugin in config.get("plugins", []):
        lines.append(f"- **plugin**: `{plugin['_class']}` ({_fields(plugin)})")
    train = {k: v for k, v in config.get("train", {}).items() if k != "seed"}  # the seed is per run
    lines.append(f"- **train**: {_fields(train)}")
    for key in ("eval", "data"):
        lines.append(f"- **{key}**: {_fields(config.get(key, {}))}")
    return lines


def _command(
    record: dict[str, Any], runs: list[dict[str, Any]], sets: dict[str, str] | None, source: str
) -> list[str]:
    if sets is None:
        return [
            "The command could not be reconstructed: the submission's `build_config()` no longer",
            "resolves to these runs' config with `--set` flags alone. Each log's `config:` line",
            "holds the exact resolved configuration.",
        ]
    world = runs[0].get("world_size") or 1
    flags = " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in sets.items())
    seeds = [str(s) for s in record["seeds"]]
    lines = [
        "From inside this folder, one run per seed (the shipped `train_gpt.py` is self-contained):",
        "",
        "```bash",
    ]
    for seed in seeds:
        launch = f"torchrun --standalone --nproc_per_node={world} train_gpt.py"
        lines.append(f"{launch} --set train.seed={seed} {flags}".rstrip())
    lines += ["```", "", "With pgolf, from its repository:", "", "```bash"]
    nproc = f" --nproc {world}" if world != 1 else ""
    lines += [f"pgolf run {source}{nproc} --seeds {','.join(seeds)} {flags}".rstrip(), "```"]
    return lines


def _compliance(record: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    c = record["compliance"]
    train_ms = max(float(r["train_time_ms"]) for r in runs)
    eval_ms = max(float(r["eval_time_ms"]) for r in runs)
    ttt = c.get("score_first_ttt")
    ttt_line = (
        f"{_check(True)} No test-time training: the score is `{record.get('score_method')}`, the artifact"
        " evaluated without weight updates, so score-first ordering does not arise"
        if ttt is None
        else f"{_check(ttt)} Score-first test-time training (adapter `{runs[0].get('ttt_adapter')}`): the "
        "harness scores each validation chunk without gradients before the adapter is handed it, and "
        "hands it only tokens already scored (`harness.pipeline.adaptation`); evaluation time includes it"
    )
    return [
        f"- {_check(c['train_under_600s'])} Training under 600 s on every seed: "
        f"max train_time {train_ms:,.0f} ms",
        f"- {_check(c['eval_under_600s'])} Evaluation under 600 s on every seed: "
        f"max eval_time {eval_ms:,.0f} ms",
        f"- {_check(c['artifact_under_16mb'])} Bytes under {BYTE_CAP:,} on every seed: max bytes_total "
        f"{record['bytes_total']:,} (code {record['bytes_code']:,}), stat'ed from the shipped files",
        f"- {ttt_line}",
        f"- {_check(c['no_val_data_before_quantization'])} No validation data before quantization: training "
        "batches come from the training shards only, validation is evaluated without gradients, and any "
        "quantization calibration reads training batches (`TrainContext.calibration`)",
        f"- {_check(c['three_seeds'])} At least 3 seeds ({len(record['seeds'])})",
        f"- Data fingerprints: dataset_sha256 `{record.get('dataset_sha256')}`, "
        f"tokenizer_sha256 `{record.get('tokenizer_sha256')}`",
    ]


def render_readme(
    record: dict[str, Any],
    runs: list[dict[str, Any]],
    config: dict[str, Any],
    sets: dict[str, str] | None,
    source: str,
    shipped_seed: int,
) -> str:
    """The README of a packaged folder: ``record`` is its submission.json, ``runs`` the runs'
    own submission.json files, ``config`` one run's config.json, ``sets`` the reproducing
    ``--set`` flags (None: not reconstructible), ``source`` the submission folder's name,
    ``shipped_seed`` the seed whose bundle is the folder's ``train_gpt.py``."""
    n = len(record["seeds"])
    std = "n/a" if record["val_bpb_std"] is None else f"{record['val_bpb_std']:.4f}"
    head = [
        f"# {record.get('name')}",
        "",
        f"**val_bpb = {record['val_bpb']:.4f}** ({n}-seed mean, std {std}) | "
        f"**{record['bytes_total']:,} bytes** (max over seeds) | {record.get('hardware')} | "
        f"protocol: {record.get('protocol')}",
        "",
    ]
    if record.get("protocol") == "smoke":
        head += [
            "> **Smoke protocol.** These runs used pgolf's CPU smoke profile, not the challenge's",
            "> 10-minute 8xH100 protocol: the numbers show the pipeline works, they are no record claim.",
            "",
        ]
    if record.get("blurb"):
        head += [str(record["blurb"]), ""]
    body = [
        f"## {n}-Seed Results",
        "",
        *_results(record),
        "",
        f"Score: {record.get('score_method')}; per-seed numbers as the logs print them.",
        "",
        "## Techniques",
        "",
        f"{record.get('technique_summary')}. From the runs' resolved configuration:",
        "",
        *_techniques(config),
        "",
        "## Command",
        "",
        *_command(record, runs, sets, source),
        "",
        "## Compliance",
        "",
        *_compliance(record, runs),
        "",
        "## Significance",
        "",
        SIGNIFICANCE_START,
        "Not compared yet: `pgolf compare <this folder> <upstream record folder>` writes here the",
        "one-sided Welch test of the challenge's rule (0.005 nats, p < 0.01) against that record.",
        SIGNIFICANCE_END,
        "",
        "## Included Files",
        "",
        "- `README.md` (this file)",
        "- `submission.json`",
        f"- `train_gpt.py` (the shipped file whose {record['bytes_code']:,} bytes were counted: the bundle "
        f"of seed {shipped_seed}'s run, which replays that run when run alone)",
        *[f"- `train_seed{seed}.log`" for seed in record["seeds"]],
        "",
        "Packaged by `pgolf package`.",
    ]
    return "\n".join(head + body) + "\n"


# ----------------------------------------------------------------------------- significance


def folder_entry(folder: Path) -> Entry:
    """The leaderboard entry of one record folder (``<records>/<track>/<folder>``), imported
    as ``pgolf leaderboard --records`` imports it."""
    folder = Path(folder)
    if not is_record_folder(folder):
        raise DataError(f"{folder}: not a record folder (expected a folder with a submission.json)")
    for entry in import_records(folder.parent.parent):
        if Path(entry.source_path).resolve() == folder.resolve():
            return entry
    raise DataError(f"{folder}: not found as <records>/<track>/<folder> by the records importer")


def write_significance(readme: Path, text: str, against: str) -> bool:
    """Replace the significance section of a packaged README with ``text``; False (nothing
    written) when ``readme`` has no pgolf markers."""
    if not readme.is_file():
        return False
    old = readme.read_text(encoding="utf-8")
    start, end = old.find(SIGNIFICANCE_START), old.find(SIGNIFICANCE_END)
    if start < 0 or end < start:
        return False
    section = (
        f"{SIGNIFICANCE_START}\nAgainst `{against}` (`pgolf compare`):\n\n```text\n{text.rstrip()}\n```\n"
    )
    write_atomic(readme, (old[:start] + section + old[end:]).encode("utf-8"))
    return True


def compare_folders(a: Path, b: Path) -> str:
    """`pgolf compare A_FOLDER B_FOLDER`: the report of `significance.compare`, also written into
    A's README when A is a packaged folder."""
    text = compare(folder_entry(a), folder_entry(b))
    if write_significance(Path(a) / "README.md", text, Path(b).name):
        text += f"written into {Path(a) / 'README.md'}\n"
    return text
