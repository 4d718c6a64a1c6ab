"""The code a run from the repository puts in its folder: the shipped ``train_gpt.py`` (the bytes
that count) and, when it is compressed, its readable twin ``train_gpt_readable.py``, both with
the modules the run's resolved configuration imports by name (`harness.api.by_name`).

Called by `harness.pipeline.setup.ship_code` through its name only, so no bundle carries the
bundler: a shipped file ships itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harness.api.by_name import modules_reached_by_name
from harness.api.config import RunConfig
from harness.tools.bundle import bundle_submission


def bundle_run(
    submission_dir: Path, run_dir: Path, config: RunConfig, overrides: Mapping[str, str] | None = None
) -> list[str]:
    """Write ``run_dir/train_gpt.py`` (and its readable twin when ``config.compress_code``),
    recording ``overrides`` so that running it alone replays the run; the log lines that say so."""
    compress = config.compress_code
    extra = modules_reached_by_name(config)
    lines = []
    if compress:  # the readable twin is for reviewers; only train_gpt.py ships and counts
        readable = bundle_submission(
            submission_dir, run_dir / "train_gpt_readable.py", extra_modules=extra, overrides=overrides
        )
        lines.append(
            f"code:readable modules:{len(readable.modules)} lines:{readable.lines} bytes:{readable.bytes}"
        )
    info = bundle_submission(
        submission_dir, run_dir / "train_gpt.py", compress=compress, extra_modules=extra, overrides=overrides
    )
    lines.append(
        f"code:bundled compress:{compress} modules:{len(info.modules)} lines:{info.lines} bytes:{info.bytes}"
    )
    return lines
