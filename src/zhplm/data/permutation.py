"""A random permutation of ``range(n)`` computed on the fly: O(1) memory for any ``n``.

:class:`Permutation` maps positions to values with a keyed Feistel network over the
smallest even number of bits that covers ``n``, and walks the cycle until the value falls in
``range(n)`` (Black and Rogaway's "cycle walking"; at most ~4 rounds trips on average). It is a
bijection for any key, so a shuffled epoch of ``n`` instances needs no stored index array:
position ``p`` of the epoch is instance ``Permutation(n, key)[p]``, vectorised over an array
of positions. The key comes from a seed (:func:`numpy.random.SeedSequence`), so the same seed
gives the same order on every rank and after every restart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Permutation"]

_ROUNDS = 6
_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), \
    np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


class Permutation:
    """A seeded bijection of ``range(n)``; ``perm[positions]`` gives the values."""

    def __init__(self, n: int, seed: int | Sequence[int]) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = int(n)
        bits = max(2, int(self.n - 1).bit_length()) if self.n > 1 else 2
        self._half = np.uint64((bits + 1) // 2)
        self._mask = np.uint64((1 << int(self._half)) - 1)
        self._keys = np.random.SeedSequence(seed).generate_state(_ROUNDS, dtype=np.uint64)

    def __len__(self) -> int:
        return self.n

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._mask
        for key in self._keys:
            left, right = right, left ^ (_mix((right + key) * _GOLD) & self._mask)
        return (left << self._half) | right

    def __getitem__(self, positions: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """The values at ``positions`` (int64 array; a scalar for a scalar position)."""
        scalar = np.ndim(positions) == 0
        p = np.atleast_1d(np.asarray(positions, dtype=np.int64))
        if p.size and (p.min() < 0 or p.max() >= self.n):
            raise IndexError(f"position out of range for a permutation of {self.n}")
        with np.errstate(over="ignore"):
            x = p.astype(np.uint64)
            todo = np.arange(len(x))
            while len(todo):
                x[todo] = self._feistel(x[todo])
                todo = todo[x[todo] >= np.uint64(self.n)]
        out = x.astype(np.int64)
        return out[0] if scalar else out
