"""CRC-32C (Castagnoli), the checksum of TF checkpoints and LevelDB tables, with numpy only.

A byte-at-a-time table loop in Python runs at a few MB/s, too slow for a 400 MB checkpoint.
The CRC register update is linear over GF(2), so a buffer is cut into many lanes that are
checksummed side by side (one numpy step per 16-bit word position, over all lanes at once) from a
zero register, then folded pairwise: the register after `A + B` is the register after `A`
advanced over `len(B)` zero bytes, XOR the register after `B` alone. Advancing over `n` zero
bytes is a 32 x 32 bit matrix, raised to `n` by squaring.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

POLYNOMIAL = 0x82F63B78  # reflected Castagnoli polynomial
MASK_DELTA = 0xA282EAD8  # TF's / LevelDB's crc masking constant
_SMALL = 4096  # below this many bytes the plain table loop is cheaper than lanes


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLYNOMIAL if crc & 1 else crc >> 1
        table[byte] = crc
    return table


TABLE = _make_table()
_TABLE_LIST = [int(x) for x in TABLE]

# A linear operator on the 32-bit register, stored as the images of the 32 unit vectors.
Operator = tuple[int, ...]


def _apply(op: Operator, value: int) -> int:
    out, bit = 0, 0
    while value:
        if value & 1:
            out ^= op[bit]
        value >>= 1
        bit += 1
    return out


def _compose(outer: Operator, inner: Operator) -> Operator:
    """outer after inner."""
    return tuple(_apply(outer, column) for column in inner)


_ONE_ZERO_BYTE: Operator = tuple(
    _TABLE_LIST[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32))
_IDENTITY: Operator = tuple(1 << i for i in range(32))


@lru_cache(maxsize=256)
def zeros_operator(n: int) -> Operator:
    """The register's advance over `n` zero bytes (from any register value)."""
    result, power = _IDENTITY, _ONE_ZERO_BYTE
    while n:
        if n & 1:
            result = _compose(power, result)
        power = _compose(power, power)
        n >>= 1
    return result


def _apply_many(op: Operator, registers: np.ndarray) -> np.ndarray:
    """`op` applied to every register of an array."""
    out = np.zeros_like(registers)
    for bit, column in enumerate(op):
        out ^= np.where((registers >> np.uint32(bit)) & np.uint32(1) == 1,
                        np.uint32(column), np.uint32(0))
    return out


def _raw_small(data: bytes, register: int = 0) -> int:
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _make_table16() -> np.ndarray:
    """The register after two zero bytes from each 16-bit register value: with the data's
    16-bit word XORed into the register first, one lookup advances two bytes."""
    low = np.arange(1 << 16, dtype=np.uint32)
    eight, byte = np.uint32(8), np.uint32(0xFF)
    once = TABLE[low & byte] ^ (low >> eight)
    return TABLE[once & byte] ^ (once >> eight)


TABLE16 = _make_table16()


def _raw_lanes(data: np.ndarray) -> int:
    """The register after `data` from a zero register, lanes side by side, two bytes a step."""
    n = data.size
    lane = max(128, int(np.sqrt(n) / 4))  # 16-bit words per lane
    lanes = -(-n // (2 * lane))
    padded = np.zeros(lanes * lane * 2, dtype=np.uint8)
    padded[padded.size - n:] = data  # leading zeros leave a zero register unchanged
    words = padded.view("<u2").reshape(lanes, lane)
    columns = np.ascontiguousarray(words.T).astype(np.uint32)
    registers = np.zeros(lanes, dtype=np.uint32)
    sixteen, low = np.uint32(16), np.uint32(0xFFFF)
    for column in columns:
        registers ^= column
        registers = TABLE16[registers & low] ^ (registers >> sixteen)
    length = 2 * lane
    while registers.size > 1:  # fold neighbours: (a, b) -> advance(a, len b) ^ b
        if registers.size % 2:
            registers = np.concatenate([np.zeros(1, dtype=np.uint32), registers])
        left, right = registers[0::2], registers[1::2]
        registers = _apply_many(zeros_operator(length), left) ^ right
        length *= 2
    return int(registers[0])


def crc32c(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """The CRC-32C of `data` (as `google_crc32c.value` or TF's `crc32c::Value`)."""
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    else:
        array = np.frombuffer(data, dtype=np.uint8)
    n = array.size
    if n < _SMALL:
        return _raw_small(array.tobytes(), 0xFFFFFFFF) ^ 0xFFFFFFFF
    # from the initial register 0xFFFFFFFF = (from zero) ^ (0xFFFFFFFF advanced over n zeros)
    raw = _raw_lanes(array) ^ _apply(zeros_operator(n), 0xFFFFFFFF)
    return raw ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """TF's / LevelDB's masked form of a CRC, as stored in checkpoints."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """The CRC behind a masked value."""
    rotated = (masked - MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF
