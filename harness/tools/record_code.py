"""What the runs of a packaged record ran, for `harness.tools.package`: the shipped code with
the seed its bundle records taken out (so the bundles of one configuration compare equal), and
the ``--set`` flags that turn the submission's ``build_config()`` into a run's resolved config
(the exact command in the record's README).

The shipped ``train_gpt.py`` is unwrapped from its self-extracting shell when it has one
(`harness.tools.bundle_wrapper`), and its ``__pgolf_bundle__``
marker is parsed with `ast.literal_eval`: nothing in it is executed. The submission's own
``train_gpt.py`` is imported to build its config, as `harness.pipeline.submission` does for a run.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from harness.api.config import apply_overrides, dumps, resolve
from harness.api.errors import DataError, PgolfError
from harness.pipeline.submission import build_submission_config
from harness.tools.bundle_wrapper import unwrap

MAX_BUNDLE_TEXT = 50_000_000
"""Decompressed size accepted when unwrapping a shipped (self-extracting) ``train_gpt.py``."""
_MARKER = re.compile(r"^__pgolf_bundle__ = (\{.*\})$", re.MULTILINE)


def without_seed(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json without ``train.seed`` (what differs between the seeds of a record)."""
    train = {k: v for k, v in config.get("train", {}).items() if k != "seed"}
    return {**config, "train": train}


def code_without_seed(path: Path) -> str:
    """The text of a shipped ``train_gpt.py`` (unwrapped when it is a shell), with the seed
    taken out of the overrides its bundle marker records: each seed's run ships a bundle that
    replays that seed, and the bundles of one configuration differ only there. The marker is
    read with `ast.literal_eval`; nothing is executed."""
    data = path.read_bytes()
    wrapped = unwrap(data, MAX_BUNDLE_TEXT, where=str(path))
    if wrapped is not None:
        # The shell around the payload stays in: bytes outside it count and run too.
        text = f"{wrapped.head}<unpacked>\n{wrapped.inner}\n</unpacked>{wrapped.tail}"
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{path}: neither UTF-8 text nor a shell pgolf writes") from None
    marker = _MARKER.search(text)
    if marker is None:
        return text
    try:
        fields = ast.literal_eval(marker.group(1))
    except (ValueError, SyntaxError):
        raise DataError(f"{path}: unreadable __pgolf_bundle__ marker") from None
    if isinstance(fields, dict) and isinstance(fields.get("overrides"), dict):
        fields["overrides"] = {k: v for k, v in fields["overrides"].items() if k != "train.seed"}
    return text[: marker.start(1)] + repr(fields) + text[marker.end(1) :]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _set_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None  # lists and components cannot be given with --set


def reproducing_sets(run_dir: Path, record: dict[str, Any], config: dict[str, Any]) -> dict[str, str] | None:
    """``--set`` flags that turn the submission's ``build_config()`` (its folder holds
    ``runs/<run_dir>``; resolved as on the run's device) into the run's ``config`` (its
    config.json), seed excluded; None when no such flags exist (the submission folder is gone,
    or a component or a list differs). Checked by applying them, with the seed, again."""
    try:
        base = resolve(
            build_submission_config(Path(run_dir).parent.parent),
            cuda=not str(record.get("device", "cpu")).startswith("cpu"),
            environ={},
            sets={},
        )
        want = _flatten(without_seed(config))
        have = _flatten(without_seed(json.loads(dumps(base))))
        sets = {}
        for key in sorted(set(want) | set(have)):
            if want.get(key, "<absent>") != have.get(key, "<absent>"):
                text = _set_text(want.get(key, "<absent>"))
                if text is None or key not in want:
                    return None
                sets[key] = text
        rebuilt = apply_overrides(base, {**sets, "train.seed": str(record["seed"])})
    except (PgolfError, OSError, SyntaxError, ImportError):  # no submission to rebuild it from
        return None
    return sets if json.loads(dumps(rebuilt)) == config else None
