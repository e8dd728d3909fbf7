"""Read TensorFlow checkpoints (the V2 "tensor bundle" of TF 1.x and 2.x) with numpy only.

A checkpoint `PREFIX` is `PREFIX.index` plus `PREFIX.data-NNNNN-of-MMMMM` shards (the
`.meta` graph is not needed). The index is a LevelDB-style sorted table:

- a 48-byte footer: the block handles (varint offset, varint size) of the meta-index and the
  index block, zero padding, and the magic `0xdb4775248b80fb57` (little-endian);
- blocks, each followed by a 5-byte trailer (compression type: 0 none, 1 snappy; the masked
  CRC-32C of contents + type); a block is prefix-compressed entries (varint shared key
  length, varint unshared length, varint value length, the key's unshared bytes, the value)
  then restart offsets (uint32 each) and their count (uint32);
- the index block maps each data block's last key to its handle.

The entry with key "" is a `BundleHeaderProto` (num_shards = 1, endianness = 2, version = 3);
every other key is a variable name whose value is a `BundleEntryProto` (dtype = 1, shape =
2, shard_id = 3, offset = 4, size = 5, crc32c = 6 fixed32, slices = 7). Those few protobuf
fields are decoded here by hand. Every tensor's masked CRC-32C is checked when it is read.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zhplm.convert.crc32c import crc32c, mask
from zhplm.errors import CheckpointError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5

# TF's DataType enum -> numpy dtype (bfloat16 is read as uint16 bits, returned as float32)
DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"),
    5: ("int16", "<i2"), 6: ("int8", "i1"), 9: ("int64", "<i8"), 10: ("bool", "?"),
    14: ("bfloat16", "<u2"), 17: ("uint16", "<u2"), 19: ("float16", "<f2"),
    22: ("uint32", "<u4"), 23: ("uint64", "<u8"),
}
TYPE_NAMES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant"}


@dataclass(frozen=True)
class TensorEntry:
    """Where one variable's bytes are, and what they are."""

    name: str
    dtype: str  # "float32", "bfloat16", ... or an unsupported type's name
    dtype_code: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool = False  # a partitioned variable (its slices are stored under other keys)


# ---------------------------------------------------------------------------- varints, protos
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("a varint runs past the end of its block")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")


def _fields(message: bytes) -> dict[int, list[int | bytes]]:
    """A protobuf message's fields: number -> values (ints for varint / fixed, bytes for
    length-delimited)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", message, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value = message[pos : pos + length]
            if len(value) != length:
                raise ValueError(f"field {number} runs past the end of its message")
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", message, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        out.setdefault(number, []).append(value)
    return out


def _signed(value: int) -> int:
    """An int64 field's value (negative numbers are 10-byte varints)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _entry(name: str, value: bytes) -> TensorEntry:
    fields = _fields(value)
    code = int(fields.get(1, [0])[0])  # type: ignore[arg-type]
    dims: list[int] = []
    for shape in fields.get(2, []):
        shape_fields = _fields(shape)  # type: ignore[arg-type]
        if shape_fields.get(3, [0])[0]:
            raise ValueError("the shape has unknown rank")
        for dim in shape_fields.get(2, []):
            dims.append(_signed(int(_fields(dim).get(1, [0])[0])))  # type: ignore[arg-type]
    dtype = DTYPES[code][0] if code in DTYPES else TYPE_NAMES.get(code, f"dtype {code}")
    crc = fields.get(6)
    return TensorEntry(
        name=name, dtype=dtype, dtype_code=code, shape=tuple(dims),
        shard_id=int(fields.get(3, [0])[0]), offset=int(fields.get(4, [0])[0]),  # type: ignore[arg-type]
        size=int(fields.get(5, [0])[0]), crc32c=int(crc[0]) if crc else None,  # type: ignore[arg-type]
        sliced=bool(fields.get(7)))


# ---------------------------------------------------------------------------- the table
def snappy_decompress(data: bytes) -> bytes:
    """Decompress a raw snappy block (LevelDB's compression type 1)."""
    length, pos = _varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:
            size = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ValueError("a snappy copy points before the start of the block")
        for _ in range(size):  # copies may overlap their own output
            out.append(out[-offset])
    if len(out) != length:
        raise ValueError(f"snappy block gave {len(out)} bytes, its header says {length}")
    return bytes(out)


def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data):
        raise ValueError(f"the {what} block ({offset}+{size}) runs past the end of the file "
                         f"({len(data)} bytes)")
    contents = data[offset:end]
    kind = data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if mask(crc32c(contents + bytes([kind]))) != stored:
        raise ValueError(f"the {what} block at offset {offset} fails its checksum")
    if kind == 0:
        return contents
    if kind == 1:
        return snappy_decompress(contents)
    raise ValueError(f"the {what} block at offset {offset} has compression type {kind} "
                     f"(only none and snappy exist)")


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError("a block is shorter than its restart count")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("a block's restart array is larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError("a block entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _handle(value: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(value, pos)
    size, pos = _varint(value, pos)
    return offset, size, pos


def read_table(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-style table file, in key order."""
    data = path.read_bytes()
    if len(data) < FOOTER_SIZE:
        raise ValueError(f"the file has {len(data)} bytes, fewer than a table's "
                         f"{FOOTER_SIZE}-byte footer")
    footer = data[-FOOTER_SIZE:]
    magic = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0]
    if magic != TABLE_MAGIC:
        raise ValueError(f"no table magic at the end (found {magic:#018x}, expected "
                         f"{TABLE_MAGIC:#018x}): not a checkpoint index, or cut short")
    _, _, pos = _handle(footer)  # the meta-index block (unused)
    index_offset, index_size, _ = _handle(footer, pos)
    index = _block(data, index_offset, index_size, "index")
    for _, handle in _block_entries(index):
        offset, size, _ = _handle(handle)
        yield from _block_entries(_block(data, offset, size, "data"))


# ---------------------------------------------------------------------------- the checkpoint
def resolve_prefix(path: str | os.PathLike[str]) -> Path:
    """A checkpoint prefix from what users pass: the prefix itself, `PREFIX.index`, a
    `PREFIX.data-*` file, or a directory with a `checkpoint` file (or a single `.index`)."""
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            found = re.search(r'^model_checkpoint_path:\s*"([^"]+)"',
                              state.read_text(encoding="utf-8", errors="replace"), re.M)
            if found:
                prefix = Path(found.group(1))
                return prefix if prefix.is_absolute() else path / prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        raise CheckpointError(f"{path} is a directory with {len(indexes)} .index files and no "
                              f"'checkpoint' file; pass the checkpoint prefix (PREFIX for "
                              f"PREFIX.index)")
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[: -len(".index")])
    data_file = re.match(r"(.*)\.data-\d{5}-of-\d{5}$", name)
    if data_file:
        return path.with_name(data_file.group(1))
    return path


class TFCheckpoint:
    """A TF checkpoint opened for reading: `names()`, `entry(name)`, `read(name)`."""

    def __init__(self, prefix: str | os.PathLike[str]) -> None:
        self.prefix = resolve_prefix(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise CheckpointError(f"{self.index_path} does not exist; pass the checkpoint "
                                  f"prefix (e.g. bert_model.ckpt for bert_model.ckpt.index)")
        self.num_shards = 1
        self.big_endian = False
        self.entries: dict[str, TensorEntry] = {}
        try:
            for key, value in read_table(self.index_path):
                if key == b"":
                    header = _fields(value)
                    self.num_shards = int(header.get(1, [1])[0])  # type: ignore[arg-type]
                    self.big_endian = int(header.get(2, [0])[0]) == 1  # type: ignore[arg-type]
                    continue
                if key.startswith(b"\x00"):  # a partitioned variable's slice (OrderedCode)
                    continue
                name = key.decode("utf-8")
                entry = _entry(name, value)
                if any(d < 0 for d in entry.shape):
                    raise ValueError(f"{name} has a negative dimension {list(entry.shape)}")
                self.entries[name] = entry
        except (ValueError, struct.error, UnicodeDecodeError, KeyError, TypeError,
                IndexError) as exc:
            raise CheckpointError(f"{self.index_path}: not a readable checkpoint index "
                                  f"({exc}); the file is damaged or cut short: copy it "
                                  f"again") from None
        if self.num_shards < 1:
            raise CheckpointError(f"{self.index_path}: the header says {self.num_shards} "
                                  f"data shards; the file is damaged")
        bad = [e.name for e in self.entries.values() if e.shard_id >= self.num_shards]
        if bad:
            raise CheckpointError(f"{self.index_path}: {bad[0]} is in data shard "
                                  f"{self.entries[bad[0]].shard_id}, but the header says "
                                  f"{self.num_shards} shards; the file is damaged")

    def check_shards(self) -> None:
        """A clear error naming the data shards the entries need that are missing."""
        used = sorted({e.shard_id for e in self.entries.values()})
        missing = [self.shard_path(i) for i in used if not self.shard_path(i).is_file()]
        if missing:
            listed = ", ".join(str(p) for p in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise CheckpointError(f"{self.prefix}: data shard(s) missing: {listed}{more}")

    def shard_path(self, shard: int) -> Path:
        """`PREFIX.data-NNNNN-of-MMMMM` of one shard."""
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def names(self) -> list[str]:
        """Variable names, sorted (as `tf.train.list_variables` gives them)."""
        return sorted(n for n, e in self.entries.items() if not _is_slice_key(n))

    def entry(self, name: str) -> TensorEntry:
        """Where `name` is stored; a clear error for an unknown name."""
        try:
            return self.entries[name]
        except KeyError:
            raise CheckpointError(f"{self.prefix}: no variable {name!r}") from None

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """The variable's value (bfloat16 as float32, exactly), its CRC checked."""
        entry = self.entry(name)
        if entry.sliced:
            raise CheckpointError(f"{self.prefix}: {name} is a partitioned variable (stored "
                                  f"in slices); convert it with TF's own tools first")
        if entry.dtype_code not in DTYPES:
            raise CheckpointError(f"{self.prefix}: {name} is a {entry.dtype} tensor, not a "
                                  f"weight this reader handles")
        path = self.shard_path(entry.shard_id)
        if not path.is_file():
            raise CheckpointError(f"{self.prefix}: data shard {path} (holding {name}) is "
                                  f"missing")
        if entry.offset + entry.size > path.stat().st_size:
            raw = b""
        else:
            with path.open("rb") as f:
                f.seek(entry.offset)
                raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise CheckpointError(f"{path}: {name} needs bytes {entry.offset}..."
                                  f"{entry.offset + entry.size}, the file has fewer; it is cut "
                                  f"short: copy it again")
        if verify and entry.crc32c is not None and mask(crc32c(raw)) != entry.crc32c:
            raise CheckpointError(f"{path}: variable {name} fails its CRC-32C check (stored "
                                  f"{entry.crc32c:#010x}, computed {mask(crc32c(raw)):#010x}); "
                                  f"the file is damaged: copy it again")
        code = DTYPES[entry.dtype_code][1]
        if self.big_endian:
            code = code.replace("<", ">")
        count = int(np.prod(entry.shape, dtype=np.int64)) if entry.shape else 1
        itemsize = np.dtype(code).itemsize
        if count * itemsize != entry.size:
            raise CheckpointError(f"{self.index_path}: {name} is {entry.dtype} "
                                  f"{list(entry.shape)} ({count * itemsize} bytes) but "
                                  f"{entry.size} bytes are stored")
        array = np.frombuffer(raw, dtype=code).reshape(entry.shape)
        if entry.dtype == "bfloat16":
            return (array.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return array.astype(array.dtype.newbyteorder("="))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.entries


def _is_slice_key(name: str) -> bool:
    """Keys of a partitioned variable's slices (stored beside its full name)."""
    return "\0" in name


def list_variables(prefix: str | os.PathLike[str]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, dtype, shape) of every variable, sorted by name, as `tf.train.list_variables`
    (which gives name and shape)."""
    checkpoint = TFCheckpoint(prefix)
    return [(n, checkpoint.entries[n].dtype, checkpoint.entries[n].shape)
            for n in checkpoint.names()]
