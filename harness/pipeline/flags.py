"""The run flags, declared once: ``--set KEY=VALUE`` (repeatable), ``--run-id ID`` and
``--resume RUN_DIR``. `harness/run.py`, ``pgolf run`` and a submission or bundle run as a
script all add them with `add_run_flags`, so the three accept exactly the same flags.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from harness.api.config import parse_set_args


@dataclass(frozen=True)
class RunFlags:
    """The parsed run flags: ``--set`` overrides as a mapping, the run id, the folder to resume."""

    sets: dict[str, str]
    run_id: str | None
    resume: Path | None

    def argv(self) -> list[str]:
        """The same flags as command-line arguments (to hand them to another process)."""
        out = [x for key, value in self.sets.items() for x in ("--set", f"{key}={value}")]
        out += ["--run-id", self.run_id] if self.run_id else []
        return out + (["--resume", str(self.resume)] if self.resume else [])


def add_run_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the run flags to ``parser``; returns it."""
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. train.iterations=50 (repeatable, type-checked)",
    )
    parser.add_argument(
        "--run-id", default=None, help="name of the run folder (default: RUN_ID or a timestamp)"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the interrupted run in RUN_DIR from its checkpoint.pgck",
    )
    return parser


def run_flags(args: argparse.Namespace) -> RunFlags:
    """The run flags of a namespace parsed by a parser given `add_run_flags`."""
    return RunFlags(parse_set_args(args.sets), args.run_id, args.resume)
