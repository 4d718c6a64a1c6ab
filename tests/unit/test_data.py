"""Tests of harness.pipeline.shards: shard format, error messages, loaders and fingerprints.

Expected values are written out by hand from the format of docs/protocol.md §1.1 and the
upstream loader semantics (docs/protocol.md §1.3-1.4, docs/techniques.md §10), not taken from
our own code.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
import torch

from harness.api.errors import ConfigError, DataError
from harness.pipeline.shards import (
    HEADER_BYTES,
    DistributedTokenLoader,
    TokenStream,
    check_token_range,
    dataset_fingerprint,
    file_sha256,
    list_shards,
    load_validation_tokens,
    read_shard,
    read_shard_header,
    write_shard,
)


def raw_shard(tokens: list[int], magic: int = 20240520, version: int = 1, count: int | None = None) -> bytes:
    """A shard built by hand with struct, independent of write_shard."""
    n = len(tokens) if count is None else count
    header = struct.pack("<256i", magic, version, n, *([0] * 253))
    return header + struct.pack(f"<{len(tokens)}H", *tokens)


def test_write_shard_layout_matches_hand_built_bytes(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, [1, 2, 65535, 0], vocab_size=None)
    assert path.read_bytes() == raw_shard([1, 2, 65535, 0])
    assert path.stat().st_size == 1024 + 2 * 4
    # No temp file is left behind by the atomic write.
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_roundtrip_numpy_and_torch_inputs(tmp_path):
    tokens = np.arange(1000, dtype=np.int64) % 1024
    write_shard(tmp_path / "a.bin", tokens, vocab_size=1024)
    write_shard(tmp_path / "b.bin", torch.tensor(tokens), vocab_size=1024)
    assert read_shard_header(tmp_path / "a.bin") == 1000
    got = read_shard(tmp_path / "a.bin")
    assert got.dtype == np.uint16
    assert np.array_equal(got, tokens)
    assert np.array_equal(read_shard(tmp_path / "b.bin"), tokens)


def test_read_hand_built_shard(tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(raw_shard([7, 8, 9]))
    assert read_shard(path).tolist() == [7, 8, 9]


@pytest.mark.parametrize(
    ("bad", "vocab", "needle"),
    [
        ([1, 2, 1024], 1024, "token id 1024 at position 2"),
        ([5, -1], None, "token id -1 at position 1"),
        ([70000], None, "token id 70000 at position 0"),
    ],
)
def test_write_refuses_bad_ids(tmp_path, bad, vocab, needle):
    path = tmp_path / "bad_ids.bin"
    with pytest.raises(DataError) as err:
        write_shard(path, bad, vocab_size=vocab)
    assert "bad_ids.bin" in str(err.value) and needle in str(err.value)
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "field", "values"),
    [
        (raw_shard([1, 2], magic=12345), "magic", ("12345", "20240520")),
        (raw_shard([1, 2], version=2), "version", ("2", "expected 1")),
        (raw_shard([1, 2])[:-1], "size", ("1027", "1028")),
        (raw_shard([1, 2]) + b"\0\0", "size", ("1030", "1028")),
        (raw_shard([1, 2], count=5), "size", ("1028", "1034")),
        (b"\0" * 100, "size", ("100", "1024")),
    ],
    ids=["magic", "version", "truncated", "extended", "count-too-big", "no-header"],
)
def test_malformed_shard_errors_name_file_and_field(tmp_path, content, field, values):
    path = tmp_path / "fineweb_val_000000.bin"
    path.write_bytes(content)
    for reader in (read_shard_header, read_shard):
        with pytest.raises(DataError) as err:
            reader(path)
        msg = str(err.value)
        assert "fineweb_val_000000.bin" in msg and field in msg
        assert all(v in msg for v in values), msg


def test_missing_shard_names_path(tmp_path):
    with pytest.raises(DataError, match="nope.bin"):
        read_shard(tmp_path / "nope.bin")


def test_check_token_range_names_file_id_and_vocab():
    with pytest.raises(DataError) as err:
        check_token_range(np.array([3, 9, 1030, 2], dtype=np.uint16), 1024, "x/shard.bin")
    msg = str(err.value)
    assert "x/shard.bin" in msg and "1030" in msg and "1024" in msg
    check_token_range(np.array([1023], dtype=np.uint16), 1024, "ok.bin")


def test_list_shards_sorted_excludes_bytes_sidecars(tmp_path):
    for name in [
        "fineweb_val_000001.bin",
        "fineweb_val_000000.bin",
        "fineweb_val_bytes_000000.bin",
        "fineweb_train_000000.bin",
        "other.bin",
    ]:
        (tmp_path / name).write_bytes(raw_shard([1]))
    assert [p.name for p in list_shards(tmp_path, "val")] == [
        "fineweb_val_000000.bin",
        "fineweb_val_000001.bin",
    ]
    assert [p.name for p in list_shards(tmp_path, "train")] == ["fineweb_train_000000.bin"]


def test_list_shards_errors(tmp_path):
    with pytest.raises(DataError) as err:
        list_shards(tmp_path / "missing_dir", "train")
    assert "missing_dir" in str(err.value)
    (tmp_path / "fineweb_val_bytes_000000.bin").write_bytes(raw_shard([1]))
    with pytest.raises(DataError) as err:
        list_shards(tmp_path, "val")
    assert str(tmp_path) in str(err.value) and "fineweb_val_*.bin" in str(err.value)
    with pytest.raises(ConfigError):
        list_shards(tmp_path, "test")


def test_validation_truncation_arithmetic(tmp_path):
    # 2 val shards of 13 + 10 tokens = 23 tokens; seq_len 4 -> (22 // 4) * 4 + 1 = 21 kept.
    write_shard(tmp_path / "fineweb_val_000000.bin", list(range(13)))
    write_shard(tmp_path / "fineweb_val_000001.bin", list(range(100, 110)))
    full = load_validation_tokens(tmp_path, 4, 1024)
    assert full.dtype == torch.int64 and full.device.type == "cpu"
    assert full.tolist() == list(range(13)) + list(range(100, 108))
    # max_targets 9 -> 8 targets (+1 token); max_targets 3 -> at least one sequence (4 targets).
    assert load_validation_tokens(tmp_path, 4, 1024, max_targets=9).tolist() == list(range(9))
    assert load_validation_tokens(tmp_path, 4, 1024, max_targets=3).tolist() == list(range(5))
    assert load_validation_tokens(tmp_path, 4, 1024, max_targets=1000).numel() == 21
    with pytest.raises(DataError, match="fewer than seq_len"):
        load_validation_tokens(tmp_path, 23, 1024)
    with pytest.raises(DataError, match="fineweb_val_000001.bin"):
        load_validation_tokens(tmp_path, 4, 105)


def write_train(tmp_path, sizes):
    """Train shards whose tokens are consecutive integers across shards."""
    start = 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", list(range(start, start + n)))
        start += n
    return start


def test_token_stream_spans_shards_and_wraps(tmp_path):
    total = write_train(tmp_path, [5, 3])
    stream = TokenStream(list_shards(tmp_path, "train"), vocab_size=1024)
    assert stream.take(4).tolist() == [0, 1, 2, 3]
    assert stream.take(6).tolist() == [4, 5, 6, 7, 0, 1]
    assert total == 8
    saved = stream.state()
    assert stream.take(3).tolist() == [2, 3, 4]
    stream.reset(saved)
    assert stream.take(1).tolist() == [2]
    stream.reset()
    assert stream.take(2).tolist() == [0, 1]


def test_token_stream_checks_range_when_shard_loaded(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", [1, 2])
    write_shard(tmp_path / "fineweb_train_000001.bin", [3, 2000])
    stream = TokenStream(list_shards(tmp_path, "train"), vocab_size=1024)
    with pytest.raises(DataError, match="fineweb_train_000001.bin"):
        stream.take(3)


def test_distributed_loader_rank_spans(tmp_path):
    # world 2, accum 2, seq 3, global 24 -> local 6 tokens, span 7, 14 tokens per micro-step.
    write_train(tmp_path, [20, 15])  # 35 tokens: 0..34
    loaders = [DistributedTokenLoader(tmp_path, r, 2, "cpu", 1024) for r in range(2)]
    steps = [[ld.next_batch(24, 3, 2) for ld in loaders] for _ in range(3)]
    # Micro-step 0 covers stream tokens 0..13: rank 0 -> 0..6, rank 1 -> 7..13.
    x0, y0 = steps[0][0]
    x1, y1 = steps[0][1]
    assert x0.dtype == torch.int64 and x0.shape == (2, 3)
    assert x0.tolist() == [[0, 1, 2], [3, 4, 5]] and y0.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert x1.tolist() == [[7, 8, 9], [10, 11, 12]] and y1.tolist() == [[8, 9, 10], [11, 12, 13]]
    # Micro-step 1 crosses the shard boundary (20) and step 2 wraps after token 34.
    assert steps[1][0][0].flatten().tolist() == [14, 15, 16, 17, 18, 19]
    assert steps[1][1][1].flatten().tolist() == [22, 23, 24, 25, 26, 27]
    assert steps[2][1][1].flatten().tolist() == [1, 2, 3, 4, 5, 6]
    assert steps[2][0][0].flatten().tolist() == [28, 29, 30, 31, 32, 33]
    # Together the spans of every micro-step are disjoint and contiguous.
    seen = []
    for step in steps:
        for x, y in step:
            seen += x.flatten().tolist()[:1] + y.flatten().tolist()
    assert seen == [t % 35 for t in range(42)]


def test_distributed_loader_reset_and_bad_batch(tmp_path):
    write_train(tmp_path, [50])
    loader = DistributedTokenLoader(tmp_path, 0, 1, torch.device("cpu"), 1024)
    first = loader.next_batch(8, 4, 1)[0]
    loader.next_batch(8, 4, 1)
    loader.reset()
    assert torch.equal(loader.next_batch(8, 4, 1)[0], first)
    with pytest.raises(ConfigError) as err:
        loader.next_batch(10, 4, 1)
    msg = str(err.value)
    assert "train_batch_tokens=10" in msg and "world_size=1" in msg and "grad_accum_steps=1" in msg
    assert "train_seq_len=4" in msg
    with pytest.raises(ConfigError):
        loader.next_batch(3, 4, 1)
    with pytest.raises(ConfigError):
        DistributedTokenLoader(tmp_path, 2, 2, "cpu", 1024)


def test_hashes_cover_name_and_content(tmp_path):
    a = tmp_path / "fineweb_val_000000.bin"
    a.write_bytes(b"hello")
    assert file_sha256(a) == hashlib.sha256(b"hello").hexdigest()
    expected = hashlib.sha256(f"fineweb_val_000000.bin\0{hashlib.sha256(b'hello').hexdigest()}\n".encode())
    assert dataset_fingerprint([a]) == expected.hexdigest()
    b = tmp_path / "fineweb_val_000001.bin"
    b.write_bytes(b"hello")
    assert dataset_fingerprint([b]) != dataset_fingerprint([a])
    before = dataset_fingerprint([a, b])
    a.write_bytes(b"hellO")
    assert dataset_fingerprint([a, b]) != before
    with pytest.raises(DataError, match="gone.bin"):
        file_sha256(tmp_path / "gone.bin")


def test_header_bytes_constant():
    assert HEADER_BYTES == struct.calcsize("<256i")
