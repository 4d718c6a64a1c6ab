"""The pieces of `pgolf package` that need no run: comparing shipped bundles apart from their
recorded seed, the folder name, and the README's significance section."""

from __future__ import annotations

import pytest

from harness.api.errors import DataError
from harness.tools.bundle_wrapper import wrap as shell_of
from harness.tools.package import folder_name
from harness.tools.record_code import code_without_seed
from harness.tools.record_readme import SIGNIFICANCE_END, SIGNIFICANCE_START, write_significance


def _bundle(tmp_path, name: str, overrides: dict, wrap: bool = True, tail: str = "") -> object:
    marker = {"format": 1, "submission": "tiny", "overrides": overrides}
    text = f"x = 1\n__pgolf_bundle__ = {marker!r}\nprint(x)\n"
    path = tmp_path / name
    path.write_bytes((shell_of(text).data if wrap else text.encode()) + tail.encode())
    return path


def test_bundles_compare_equal_apart_from_the_seed(tmp_path):
    a = _bundle(tmp_path, "a.py", {"train.iterations": "4", "train.seed": "1337"})
    b = _bundle(tmp_path, "b.py", {"train.iterations": "4", "train.seed": "42"})
    assert a.read_bytes() != b.read_bytes()
    assert code_without_seed(a) == code_without_seed(b)
    assert "'train.seed'" not in code_without_seed(a) and "'train.iterations': '4'" in code_without_seed(a)
    other = _bundle(tmp_path, "c.py", {"train.iterations": "5", "train.seed": "42"})
    assert code_without_seed(other) != code_without_seed(b)
    tail = _bundle(tmp_path, "d.py", {"train.iterations": "4", "train.seed": "42"}, tail="import os\n")
    assert code_without_seed(tail) != code_without_seed(b)  # bytes outside the shell count too
    plain = _bundle(tmp_path, "e.py", {"train.iterations": "4", "train.seed": "7"}, wrap=False)
    assert "print(x)" in code_without_seed(plain) and "'train.seed'" not in code_without_seed(plain)


def test_a_corrupt_shell_is_refused(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text('import lzma,base64;exec(compile(lzma.decompress(base64.b85decode("abc")),"x","exec"))\n')
    with pytest.raises(DataError, match="cannot unwrap"):
        code_without_seed(path)


def test_folder_name():
    record = {"date": "2026-12-01T13:00:11Z", "name": "My Run: v2/x", "track": "10min_16mb"}
    assert folder_name(record) == ("track_10min_16mb", "2026-12-01_My_Run_v2_x")
    with pytest.raises(DataError, match="date"):
        folder_name({**record, "date": "yesterday"})


def test_significance_replaces_its_section_only(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# r\n\n{SIGNIFICANCE_START}\nold\n{SIGNIFICANCE_END}\n\n## Files\n")
    assert write_significance(readme, "verdict: significant\n", "2026-03-31_X")
    assert write_significance(readme, "verdict: not significant\n", "2026-03-31_Y")
    text = readme.read_text()
    assert text.startswith("# r\n\n") and text.endswith(f"{SIGNIFICANCE_END}\n\n## Files\n")
    assert "verdict: not significant" in text and "verdict: significant\n" not in text and "old" not in text
    upstream = tmp_path / "UPSTREAM.md"
    upstream.write_text("# a record README without our markers\n")
    assert not write_significance(upstream, "verdict: significant\n", "x")
    assert upstream.read_text() == "# a record README without our markers\n"
