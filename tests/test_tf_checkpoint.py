"""The TF checkpoint reader on checkpoints written by real TensorFlow
(`tests/fixtures/make_tf_checkpoints.py`): every tensor equals TF's own read-back, the
listing equals `tf.train.list_variables`, CRC-32C and damaged files are caught. TensorFlow
is never imported here."""

from __future__ import annotations

import json
import shutil
import struct
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
    with pytest.raises(CheckpointError, match="data shard"):
        TFCheckpoint(prefix)


def test_snappy_blocks_decompress() -> None:
    # "abcd" as a literal, then a 1-byte-offset copy of 8 bytes at offset 4: "abcdabcdabcd"
    block = bytes([12, (4 - 1) << 2]) + b"abcd" + bytes([0x01 | ((8 - 4) << 2), 4])
    assert snappy_decompress(block) == b"abcdabcdabcd"
    with pytest.raises(ValueError, match="header says"):
        snappy_decompress(bytes([20, (4 - 1) << 2]) + b"abcd")
    assert struct.calcsize("<I") == 4


def test_cli_tf_list_prints_every_variable() -> None:
    result = subprocess.run([sys.executable, "-m", "zhplm", "convert", "tf-list",
                             str(PREFIXES["dtypes"])], capture_output=True, text=True,
                            check=True)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(TFCheckpoint(PREFIXES["dtypes"]).names())
    assert any("\tbfloat16\t" in line for line in lines)
