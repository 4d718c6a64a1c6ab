"""The shipped train_gpt.py of every submission in each shell: codec x encoding (seconds, CPU).

Usage: ``python benchmarks/shell_codecs.py`` (output committed as ``benchmarks/shell_codecs.txt``).

Each submission is bundled as the main job ships it (minified, default data, with what its
config reaches by name) and its bundle text is wrapped by `harness.tools.bundle_wrapper.shell`
with every codec (lzma-9e, zlib-9, brotli-11) in both encodings (latin-1 literal, base85). The
table prints the bytes on disk of each, the one `bundle_submission` writes (marked ``*``: the
smallest codec the bundle may use; brotli only when the bundle imports it), and the minified
text it wraps. The README's "Code budgets" quotes this table.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.tools.bundle import bundle_submission
from harness.tools.bundle_report import default_extra_modules
from harness.tools.bundle_wrapper import CODECS, ENCODINGS, compress, shell, unwrap

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    subs = sorted(p.name for p in (ROOT / "submissions").iterdir() if (p / "train_gpt.py").is_file())
    cols = [f"{c}+{e}" for e in ENCODINGS for c in CODECS]
    print(f"| submission | minified text | {' | '.join(cols)} |")
    print("|---|---:|" + "---:|" * len(cols))
    with tempfile.TemporaryDirectory() as tmp:
        for name in subs:
            sub = ROOT / "submissions" / name
            info = bundle_submission(
                sub,
                Path(tmp) / f"{name}.py",
                compress=True,
                extra_modules=default_extra_modules(submission_dir=sub),
            )
            written = unwrap(info.path.read_bytes(), 1 << 26)
            text = written.inner.encode("utf-8")
            packed = {c: compress(c, text) for c in CODECS}
            cells = []
            for e in ENCODINGS:
                for c in CODECS:
                    size = len(shell(c, e, packed[c]))
                    mark = "*" if (c, e) == (written.codec, written.encoding) else ""
                    cells.append(f"{size:,}{mark}")
            assert info.bytes == len(shell(written.codec, written.encoding, packed[written.codec]))
            print(f"| `{name}` | {len(text):,} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
