"""check_access_rw's one-shot comparison of an IOVA's 63 reads (harness/helpers/access.py)
against the read-by-read walk it replaces: it accepts exactly the reads the walk accepts."""

from __future__ import annotations

import random

from harness.helpers.access import _TMP_SIZE, _reads_match

LENGTHS = range(1, _TMP_SIZE)


def _sweep(contents: bytearray, offset: int, data: bytes) -> bytes:
    """What the reads hold when the kernel does its job: read L, then write L, in order."""
    reads = bytearray(random.Random(7).randbytes(len(data)))  # untouched bytes: any value
    buffer = bytearray(contents)
    for length in LENGTHS:
        slot = _TMP_SIZE * (length - 1)
        reads[slot:slot + length] = buffer[offset:offset + length]
        buffer[offset:offset + length] = data[slot:slot + length]
    return bytes(reads)


def test_correct_reads_match_and_any_wrong_byte_is_caught() -> None:
    rng = random.Random(1)
    contents = bytearray(rng.randbytes(300))
    data = rng.randbytes(_TMP_SIZE * len(LENGTHS))
    reads = _sweep(contents, 100, data)
    assert _reads_match(contents, 100, data, reads)
    for length in LENGTHS:
        slot = _TMP_SIZE * (length - 1)
        for pos in range(_TMP_SIZE):
            wrong = bytearray(reads)
            wrong[slot + pos] ^= 0x5A
            # A byte the read stored must be right; one past its length is not looked at.
            assert _reads_match(contents, 100, data, bytes(wrong)) == (pos >= length)
