"""The CLI flag set is frozen (torchtitan's test_no_new_cli_options): changing it is a decision."""

from __future__ import annotations

import argparse

from harness.tools.cli import build_parser


def _flags(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.add(f"{prefix}{name}")
                out |= _flags(sub, f"{prefix}{name} ")
        elif action.option_strings:
            out |= {f"{prefix}{o}" for o in action.option_strings if o not in ("-h", "--help")}
        else:
            out.add(f"{prefix}<{action.dest}>")
    return out


def test_cli_flags_are_frozen():
    assert _flags(build_parser()) == {
        "run",
        "run <submission>",
        "run --nproc",
        "run --seeds",
        "run --set",
        "run --run-id",
        "run --resume",
        "list",
        "list --no-entrypoints",
        "bundle",
        "bundle <submission>",
        "bundle -o",
        "bundle --output",
        "bundle --compress",
        "bundle --ascii",
        "bundle --report",
        "data",
        "data build-default",
        "data build-default --variant",
        "data download",
        "data bytes",
        "data bytes <source>",
        "data bytes --tokenizer",
        "data bytes --dest",
        "data download --variant",
        "data download --train-shards",
        "data download --dest",
        "leaderboard",
        "leaderboard --records",
        "leaderboard --out",
        "compare",
        "compare <a>",
        "compare <b>",
        "compare --records",
        "package",
        "package <run_dirs>",
        "package --out",
        "package --allow-smoke",
        "verify",
        "verify <run_dir>",
        "bench",
        "bench --compare",
        "bench --save",
        "bench --gpu",
        "bench --threshold",
        "rescore",
        "rescore <target>",
        "rescore --data-path",
        "rescore --tokenizer-path",
        "rescore --device",
        "import",
        "import <source>",
        "import --submission",
        "import -o",
        "import --output",
        "import --harness-numerics",
    }
