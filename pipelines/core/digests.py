"""Exact sets of ids at 16 bytes an id: what a run remembers of the ids it has staged or judged.

Curation remembers every pair id and prompt key it staged, so that a later batch does not stage them
again, and the quality gates remember every value a uniqueness gate has seen, so that a duplicate in a
later chunk of facts is caught. As Python strings in a set that is about 110 bytes an id and grows with
the input; here an id is a 128-bit digest (curation's: the id itself, a pair id *is* an md5 digest in hex,
any other key md5-hashed, :func:`digests`; the gates': two seeded polars hashes of the value, which live only
as long as the run), kept as two uint64 columns in sorted runs. A lookup is a binary search per run (a hash pass
over the high halves first, when many are asked at once); runs are merged as they grow (a log-structured
merge), so a set of n ids has O(log n) runs.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from prefhouse.pipelines.core.ids import md5_halves

HEX_MD5 = r"^[0-9a-f]{32}$"


def digests(keys: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each key's 128-bit digest as (high, low) uint64 halves: the key itself when it is an md5 hex digest (a
    content id), else the md5 of "v" + its text ("n" for a null, so no text is hashed as a null is)."""
    is_hex = keys.str.contains(HEX_MD5).fill_null(False)
    if is_hex.all():
        return _hex_halves(keys)
    high, low = np.zeros(keys.len(), np.uint64), np.zeros(keys.len(), np.uint64)
    if is_hex.any():
        at = is_hex.arg_true().to_numpy()
        high[at], low[at] = _hex_halves(keys.gather(at))
    at = (~is_hex).arg_true().to_numpy()
    high[at], low[at] = md5_halves(keys.gather(at))
    return high, low


def _hex_halves(keys: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The 128 bits that 32-character lowercase hex keys spell, decoded arithmetically on the keys' bytes laid end to
    end: '0'-'9' are 0x30-0x39 and 'a'-'f' 0x61-0x66, so a character's value is its low four bits, plus 9 for a letter."""
    text = pc.cast(keys.to_arrow(), pa.large_string())
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    start = int(np.frombuffer(text.buffers()[1], np.int64, count=1, offset=8 * text.offset)[0])  # each key is 32 bytes: they lie end to end
    chars = np.frombuffer(text.buffers()[2], np.uint8, count=32 * len(text), offset=start).reshape(-1, 32)
    nibbles = (chars & 0xF) + 9 * (chars >> 6)
    halves = (nibbles[:, 0::2] << 4 | nibbles[:, 1::2]).view(">u8")
    return halves[:, 0].astype(np.uint64), halves[:, 1].astype(np.uint64)


class DigestSet:
    """Digests in runs sorted by their high half; exact (two ids are the same only if all 128 bits are)."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(high) for high, _ in self._runs)

    def contains(self, high: np.ndarray, low: np.ndarray) -> np.ndarray:
        """For each digest, whether the set holds it."""
        found = np.zeros(len(high), dtype=bool)
        for run_high, run_low in self._runs:
            if len(high) * 8 < len(run_high):
                found |= _in_run(run_high, run_low, high, low)
                continue
            # many digests against this run (a chunk of gate facts): one hash pass over the high halves keeps the
            # few that could be in it, instead of a binary search per digest into memory far apart
            ask = np.flatnonzero(pl.Series(high, dtype=pl.UInt64).is_in(pl.Series(run_high, dtype=pl.UInt64).implode()).to_numpy())
            found[ask] |= _in_run(run_high, run_low, high[ask], low[ask])
        return found

    def add(self, high: np.ndarray, low: np.ndarray) -> None:
        """Remember the digests (one new sorted run, merged with the last while it is no larger than the new one)."""
        if not len(high):
            return
        self._runs.append(_sorted(high, low))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            (h1, l1), (h2, l2) = self._runs.pop(), self._runs.pop()
            self._runs.append(_sorted(np.concatenate([h2, h1]), np.concatenate([l2, l1])))


def _in_run(run_high: np.ndarray, run_low: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """For each digest, whether the sorted run holds it: a binary search on the high half, then the low half compared."""
    at = np.minimum(np.searchsorted(run_high, high), len(run_high) - 1)
    same_high = run_high[at] == high
    found = same_high & (run_low[at] == low)
    # the same high half more than once in the run (1 in 2^64 a pair of ids): compare every low half
    for i in np.flatnonzero(same_high & ~found & (run_high[np.minimum(at + 1, len(run_high) - 1)] == high)):
        found[i] = bool((run_low[at[i]:np.searchsorted(run_high, high[i], side="right")] == low[i]).any())
    return found


def _sorted(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """By the high half only (a stable sort: two concatenated sorted runs merge in linear time)."""
    order = np.argsort(high, kind="stable")
    return high[order], low[order]
