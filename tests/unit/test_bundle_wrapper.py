"""The self-extracting shell of the shipped train_gpt.py (`harness.tools.bundle_wrapper`): every
byte value survives the latin-1 literal, the shell runs in a fresh interpreter, the smallest codec
is the one written, and reading a shell back is bounded and never runs it."""

from __future__ import annotations

import base64
import lzma
import os
import random
import subprocess
import sys

import pytest

from harness.api.errors import DataError
from harness.tools import bundle_wrapper as bw

# A program whose compressed form holds every byte value, the escaped five included.
_NOISE = os.urandom(3000).hex()


def _program(tag: str) -> str:
    return f"import sys\nnoise = {_NOISE!r}\nsys.stdout.write({tag!r} + str(len(noise)))\n"


@pytest.mark.parametrize("encoding", bw.ENCODINGS)
@pytest.mark.parametrize("codec", bw.CODECS)
def test_every_shell_runs_and_reads_back(tmp_path, codec, encoding):
    text = _program(f"{codec}/{encoding}:")
    packed = bw.compress(codec, text.encode())
    if encoding == "latin1":  # the five escaped values occur in the payload, so escaping is exercised
        assert all(bytes([b]) in packed for b in b'\\"\n\r') or len(packed) < 2000
    data = bw.shell(codec, encoding, packed)
    path = tmp_path / "train_gpt.py"
    path.write_bytes(data)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, timeout=60, check=True)
    assert out.stdout.decode() == f"{codec}/{encoding}:{len(_NOISE)}"
    back = bw.unwrap(data, 1 << 20)
    assert back is not None and (back.inner, back.codec, back.encoding) == (text, codec, encoding)
    assert (
        data.decode("latin-1")
        == f"{back.head}{data.decode('latin-1')[len(back.head) : -len(back.tail)]}{back.tail}"
    )


def test_latin1_literal_survives_every_byte_value(tmp_path):
    rng = random.Random(7)
    payloads = [
        bytes(range(256)) * 2,
        b"\0" + b"1" * 5 + b"\\\r\n\x85\x0c",
        bytes(rng.randrange(256) for _ in range(4000)),
    ]
    lines = "".join(f'p{i} = "{bw._latin1_literal(p)}".encode("latin-1")\n' for i, p in enumerate(payloads))
    path = tmp_path / "literals.py"
    path.write_bytes(("# coding: latin-1\n" + lines).encode("latin-1"))
    got = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import runpy;d=runpy.run_path({str(path)!r})\n"
            f"print(repr([d[f'p{{i}}'] for i in range({len(payloads)})]))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert eval(got.stdout) == payloads  # noqa: S307 - our own repr of bytes
    # No raw line end is left inside the literal: the shell stays one line for git and editors.
    assert path.read_bytes().count(b"\n") == 1 + len(payloads) and b"\r" not in path.read_bytes()


def test_wrap_keeps_the_smallest_codec():
    text = _program("x") * 3
    sizes = {c: len(bw.shell(c, "latin1", bw.compress(c, text.encode()))) for c in bw.CODECS}
    chosen = bw.wrap(text)
    assert len(chosen.data) == min(sizes.values()) and sizes[chosen.codec] == len(chosen.data)
    only_zlib = bw.wrap(text, codecs=("zlib",))
    assert only_zlib.codec == "zlib" and len(only_zlib.data) == sizes["zlib"]
    with pytest.raises(ValueError, match="encoding 'utf16'"):
        bw.wrap(text, encoding="utf16")


def test_latin1_costs_about_two_percent_where_base85_costs_a_quarter():
    packed = os.urandom(40_000)
    latin1, base85 = (len(bw.shell("lzma", e, packed)) - len(bw.shell("lzma", e, b"")) for e in bw.ENCODINGS)
    # 5 of 256 byte values take two characters (NUL four before an octal digit, 8 of 256): about
    # 1.98 % on random bytes; base85 writes 5 for 4.
    assert latin1 / len(packed) == pytest.approx(1 + 5 / 256 + 2 / 256 * 8 / 256, abs=0.002)
    assert base85 / len(packed) == 1.25


def test_base85_lzma_shell_is_the_shape_upstream_records_ship():
    text = "print('hi')\n"
    data = bw.shell("lzma", "base85", lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME))
    payload = base64.b85encode(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME)).decode()
    assert data.decode() == (
        f'import lzma,base64;exec(compile(lzma.decompress(base64.b85decode("{payload}")),'
        '"<pgolf-bundle>/train_gpt.py","exec"))\n'
    )


def test_unwrap_is_bounded_and_refuses_corrupt_shells():
    big = "x = 1\n" * 50_000
    data = bw.wrap(big).data
    with pytest.raises(DataError, match=r"big\.py: cannot unwrap .*decompresses to more than 1000 bytes"):
        bw.unwrap(data, 1000, where="big.py")
    assert bw.unwrap(data, len(big)).inner == big
    for codec in bw.CODECS:
        packed = bw.compress(codec, big.encode())
        truncated = bw.shell(codec, "latin1", packed[: len(packed) // 2])
        with pytest.raises(DataError, match=rf"cut\.py: cannot unwrap the {codec}\+latin1 bundle"):
            bw.unwrap(truncated, 1 << 20, where="cut.py")
    # Not a shell: plain source, another program, bytes that are not text.
    assert bw.unwrap(b"print(1)\n", 100) is None
    assert (
        bw.unwrap(b'import os;exec(compile(os.decompress("x".encode("latin-1")),"a","exec"))\n', 100) is None
    )
    assert bw.unwrap(b"\xff\xfe\x00", 100) is None


def test_brotli_is_a_shell_codec_only_for_code_that_imports_it():
    assert bw.shell_codecs(["import lzma\n", "x = 'import brotli'\n"]) == bw.STDLIB_CODECS
    assert bw.shell_codecs(["def f():\n    import brotli\n"]) == bw.CODECS
    assert bw.shell_codecs(["from brotli import compress\n"]) == bw.CODECS
    assert "brotli" not in bw.wrap("x = 1\n" * 100, codecs=bw.STDLIB_CODECS).codec
