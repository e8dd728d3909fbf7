"""The TF checkpoint reader on checkpoints written by real TensorFlow
(`tests/fixtures/make_tf_checkpoints.py`): every tensor equals TF's own read-back, the
listing equals `tf.train.list_variables`, CRC-32C and damaged files are caught. TensorFlow
is never imported here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zhplm.convert.crc32c import crc32c, mask, unmask
from zhplm.convert.tf_checkpoint import TFCheckpoint, list_variables, snappy_decompress
from zhplm.errors import CheckpointError

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
PREFIXES = {"bert": FIXTURES / "bert" / "bert_model.ckpt",
            "electra": FIXTURES / "electra" / "electra_tiny",
            "lert": FIXTURES / "lert" / "lert_model.ckpt",
            "sharded": FIXTURES / "sharded" / "model.ckpt",
            "dtypes": FIXTURES / "dtypes" / "model.ckpt"}


def _dump(prefix: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays = np.load(f"{prefix}.npz")
    dtypes = json.loads(Path(f"{prefix}.dtypes.json").read_text(encoding="utf-8"))
    return {name: arrays[name] for name in arrays.files}, dtypes


@pytest.mark.parametrize("name", list(PREFIXES))
def test_every_tensor_equals_tensorflows_read_back(name: str) -> None:
    prefix = PREFIXES[name]
    checkpoint = TFCheckpoint(prefix)
    arrays, dtypes = _dump(prefix)
    listed = json.loads(Path(f"{prefix}.variables.json").read_text(encoding="utf-8"))
    assert [(n, list(s)) for n, _, s in list_variables(prefix)] == \
        [(n, list(s)) for n, s in listed]
    assert set(checkpoint.names()) == set(arrays) == set(dtypes)
    for variable, expected in arrays.items():
        got = checkpoint.read(variable)
        assert checkpoint.entry(variable).dtype == dtypes[variable]
        if dtypes[variable] == "bfloat16":  # the dump holds the raw bits
            assert got.dtype == np.float32
            got = (got.view(np.uint32) >> 16).astype(np.uint16)
        assert got.dtype == expected.dtype, variable
        assert got.shape == expected.shape, variable
        assert np.array_equal(got, expected), variable


def test_the_fixtures_cover_shards_and_dtypes() -> None:
    sharded = TFCheckpoint(PREFIXES["sharded"])
    assert sharded.num_shards >= 2
    assert {sharded.entry(n).shard_id for n in sharded.names()} == set(range(sharded.num_shards))
    kinds = {TFCheckpoint(PREFIXES["dtypes"]).entry(n).dtype
             for n in TFCheckpoint(PREFIXES["dtypes"]).names()}
    assert {"float32", "float16", "bfloat16", "int32", "int64"} <= kinds
    electra = TFCheckpoint(PREFIXES["electra"])
    assert "global_step" in electra
    assert any(n.endswith("/adam_m") for n in electra.names())


def test_crc32c_known_values() -> None:
    assert crc32c(b"") == 0
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 B.4: ascending bytes
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 100_003, dtype=np.uint8)
    # the lane-parallel path equals a byte-at-a-time definition
    register = 0xFFFFFFFF
    for byte in data.tobytes():
        register ^= byte
        for _ in range(8):
            register = (register >> 1) ^ 0x82F63B78 if register & 1 else register >> 1
    assert crc32c(data) == register ^ 0xFFFFFFFF
    assert unmask(mask(0xDEADBEEF)) == 0xDEADBEEF


def _copy(prefix: Path, tmp_path: Path) -> Path:
    for path in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / prefix.name


def test_a_corrupted_data_byte_is_a_crc_error_naming_the_variable(tmp_path: Path) -> None:
    prefix = _copy(PREFIXES["bert"], tmp_path)
    checkpoint = TFCheckpoint(prefix)
    entry = checkpoint.entry("bert/pooler/dense/kernel")
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[entry.offset + entry.size // 2] ^= 0x40
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"bert/pooler/dense/kernel fails its CRC-32C") \
            as info:
        TFCheckpoint(prefix).read("bert/pooler/dense/kernel")
    assert str(data) in str(info.value)
    TFCheckpoint(prefix).read("bert/embeddings/word_embeddings")  # the others still read


@pytest.mark.parametrize("cut", [10, 60, 200])
def test_a_truncated_index_is_a_clear_error(tmp_path: Path, cut: int) -> None:
    prefix = _copy(PREFIXES["bert"], tmp_path)
    index = Path(f"{prefix}.index")
    index.write_bytes(index.read_bytes()[:-cut])
    with pytest.raises(CheckpointError, match="not a readable checkpoint index") as info:
        TFCheckpoint(prefix)
    assert str(index) in str(info.value) and "copy it again" in str(info.value)


def test_a_damaged_index_block_fails_its_checksum(tmp_path: Path) -> None:
    prefix = _copy(PREFIXES["bert"], tmp_path)
    index = Path(f"{prefix}.index")
    raw = bytearray(index.read_bytes())
    raw[20] ^= 0x01
    index.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        TFCheckpoint(prefix)


def test_missing_files_and_prefix_forms(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist; pass the checkpoint prefix"):
        TFCheckpoint(tmp_path / "nothing.ckpt")
    prefix = _copy(PREFIXES["bert"], tmp_path)
    names = TFCheckpoint(prefix).names()
    assert TFCheckpoint(f"{prefix}.index").names() == names
    assert TFCheckpoint(f"{prefix}.data-00000-of-00001").names() == names
    assert TFCheckpoint(tmp_path).names() == names  # a directory with one .index
    Path(f"{prefix}.data-00000-of-00001").unlink()
    listing = TFCheckpoint(prefix)  # the index alone lists the variables, as TF's
    assert listing.names() == names
    with pytest.raises(CheckpointError, match="data shard"):
        listing.check_shards()
    with pytest.raises(CheckpointError, match="data shard .* is missing"):
        listing.read(names[0])


def test_snappy_blocks_decompress() -> None:
    # "abcd" as a literal, then a 1-byte-offset copy of 8 bytes at offset 4: "abcdabcdabcd"
    block = bytes([12, (4 - 1) << 2]) + b"abcd" + bytes([0x01 | ((8 - 4) << 2), 4])
    assert snappy_decompress(block) == b"abcdabcdabcd"
    with pytest.raises(ValueError, match="header says"):
        snappy_decompress(bytes([20, (4 - 1) << 2]) + b"abcd")


def test_cli_tf_list_prints_every_variable() -> None:
    result = subprocess.run([sys.executable, "-m", "zhplm", "convert", "tf-list",
                             str(PREFIXES["dtypes"])], capture_output=True, text=True,
                            check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(TFCheckpoint(PREFIXES["dtypes"]).names())
    assert any("\tbfloat16\t" in line for line in lines)


def varint(n: int) -> bytes:
    """A protobuf / LevelDB varint (negative numbers as their 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A one-block index table of sorted (key, value) entries (no prefix sharing)."""
    from zhplm.convert.crc32c import crc32c as crc
    from zhplm.convert.crc32c import mask as masked

    def block(items: list[tuple[bytes, bytes]]) -> bytes:
        body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in items)
        body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
        return body + b"\x00" + masked(crc(body + b"\x00")).to_bytes(4, "little")

    data = block(entries)
    index = block([(b"\xff", varint(0) + varint(len(data) - 5))])
    meta = block([])
    handles = varint(len(data) + len(index)) + varint(len(meta) - 5)
    handles += varint(len(data)) + varint(len(index) - 5)
    footer = handles.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    return data + index + meta + footer


def _entry_proto(dtype: int, dims: list[int], shard: int, offset: int, size: int) -> bytes:
    dim_msgs = b"".join(b"\x12" + varint(len(b"\x08" + varint(d))) + b"\x08" + varint(d)
                        for d in dims)
    shape = b"\x12" + varint(len(dim_msgs)) + dim_msgs
    return (b"\x08" + varint(dtype) + shape + b"\x18" + varint(shard) + b"\x20" +
            varint(offset) + b"\x28" + varint(size))


@pytest.mark.parametrize(("header", "entry", "message"), [
    (b"\x08\x01", _entry_proto(1, [2, 2], 3, 0, 16), "in data shard 3"),
    (b"\x08\x00", _entry_proto(1, [2, 2], 0, 0, 16), "0 data shards"),
    (b"\x08\x01", _entry_proto(1, [-1, -2], 0, 0, 8), "negative dimension"),
])
def test_crafted_indexes_are_clear_errors(tmp_path: Path, header: bytes, entry: bytes,
                                          message: str) -> None:
    prefix = tmp_path / "m.ckpt"
    Path(f"{prefix}.index").write_bytes(_table([(b"", header), (b"w", entry)]))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(16))
    with pytest.raises(CheckpointError, match=message):
        TFCheckpoint(prefix)


def test_a_size_beyond_the_data_file_and_partitioned_keys(tmp_path: Path) -> None:
    prefix = tmp_path / "m.ckpt"
    huge = _entry_proto(1, [1 << 40], 0, 0, 4 << 40)
    slice_key = b"\x00w\x00\x01\x81\x82"  # OrderedCode bytes of a partitioned slice
    Path(f"{prefix}.index").write_bytes(
        _table([(b"", b"\x08\x01"), (slice_key, _entry_proto(1, [2], 0, 0, 8)),
                (b"w", huge)]))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(16))
    checkpoint = TFCheckpoint(prefix)
    assert checkpoint.names() == ["w"]  # the slice key is skipped
    with pytest.raises(CheckpointError, match="cut short"):
        checkpoint.read("w")
