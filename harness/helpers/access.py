"""Access objects: the selftest driver's emulated in-kernel IOAS users (mdev-like drivers).

IOMMU_TEST_OP_CREATE_ACCESS wraps an ``iommufd_access`` in a file and returns its fd; that
fd number is also the ``id`` the other access ops name, and closing it destroys the access
(iommufd_utils.h's test_cmd_create_access / test_cmd_destroy_access)::

    access = create_access(fd, ioas_id, MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    item = access.pages(iova, length, uptr)   # pin, and check the pages are uptr's
    access.destroy_pages(item)
    access.close()

Every call raises ``OSError`` with the kernel's errno, for ``expect_errno``.
"""

from __future__ import annotations

import random
from typing import Any

import uapi_headers as u
from backends.calls import Call, batch
from harness.helpers.core import Iommufd, SelftestGlobals
from harness.helpers.selftest import run_test_cmd, test_cmd

__all__ = [
    "Access",
    "check_access_rw",
    "create_access",
]


class Access:
    """An access object: its fd on the backend is also its ID for IOMMU_TEST_CMD."""

    def __init__(self, fd: Iommufd, access_fd: int) -> None:
        self.fd = fd
        self.id = access_fd
        self.closed = False

    def __int__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        return f"Access(id={self.id})"

    def pages(self, iova: int, length: int, uptr: int, flags: int = 0) -> int:
        """ACCESS_PAGES: pin [iova, iova+length) through the access and have the driver check
        the pinned pages are those at ``uptr`` (EBADE otherwise); returns the item's ID.

        ``flags`` takes ``MOCK_FLAGS_ACCESS_WRITE`` for a writable pin.
        """
        cmd = run_test_cmd(self.fd, u.IOMMU_TEST_OP_ACCESS_PAGES, self.id, access_pages={
            "flags": flags, "iova": iova, "length": length, "uptr": uptr})
        return int(cmd.access_pages.out_access_pages_id)

    def destroy_pages(self, access_pages_id: int) -> None:
        """DESTROY_ACCESS_PAGES: unpin one item (ENOENT once an unmap has removed it)."""
        run_test_cmd(self.fd, u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, self.id,
                     destroy_access_pages={"access_pages_id": access_pages_id})

    def rw(self, iova: int, uptr: int, length: int, flags: int = 0) -> None:
        """ACCESS_RW: copy ``length`` bytes between IOVA ``iova`` and user memory ``uptr``.

        A read by default; ``MOCK_ACCESS_RW_WRITE`` writes the IOVA, and
        ``MOCK_ACCESS_RW_SLOW_PATH`` forces the page-by-page path.
        """
        run_test_cmd(self.fd, u.IOMMU_TEST_OP_ACCESS_RW, self.id, access_rw={
            "iova": iova, "length": length, "uptr": uptr, "flags": flags})

    def replace_ioas(self, ioas_id: int) -> None:
        """ACCESS_REPLACE_IOAS: move the access to IOAS ``ioas_id``."""
        run_test_cmd(self.fd, u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, self.id,
                     access_replace_ioas={"ioas_id": ioas_id})

    def close(self) -> None:
        """close(2) the access fd, which destroys the access (test_cmd_destroy_access)."""
        if not self.closed:
            self.closed = True
            self.fd.backend.close(self.id)


def create_access(fd: Iommufd, ioas_id: int, flags: int = 0) -> Access:
    """CREATE_ACCESS on IOAS ``ioas_id``; ``MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES`` makes
    it a pinning user (one that must be told about unmaps)."""
    cmd = run_test_cmd(fd, u.IOMMU_TEST_OP_CREATE_ACCESS, ioas_id,
                       create_access={"flags": flags})
    return Access(fd, int(cmd.create_access.out_access_fd))


# The sizes of the kernel's check_access_rw(): a uint16_t[32] bounce buffer, and a sweep
# of IOVAs 50 bytes either side of the second page's start, so every access straddles
# (or touches) a page boundary.
_TMP_SIZE = 32 * 2
_SWEEP = 50


def check_access_rw(fd: Iommufd, g: SelftestGlobals, access_id: int, iova: int,
                    def_flags: int = 0, *, seed: int = 1) -> None:
    """The kernel's check_access_rw(): ``g.buffer`` is mapped at ``iova`` in the access's
    IOAS; read and write it through ACCESS_RW at every (offset, length) around the first
    page boundary, then read it all at once, comparing with the buffer each time.

    The random contents come from ``seed`` (the C test uses rand() unseeded, i.e. seed 1),
    so a failure reproduces.
    """
    backend = fd.backend
    rng = random.Random(seed)
    # The buffer's contents are tracked here, so each read is checked against what the
    # buffer must hold and each write by the next, longer read of the same window (it
    # covers every byte the write stored) and a final look at the window. Every length
    # reads into and writes from its own slot of two bounce pages, so an IOVA's 126
    # ioctls need one poke and two peeks, not 378 calls: on a QEMU guest the calls, not
    # the round trips, are what costs.
    contents = bytearray(rng.randbytes(g.buffer_size))
    backend.poke(g.buffer, bytes(contents))
    lengths = range(1, _TMP_SIZE)
    reads = backend.alloc(2 * g.page_size)
    writes = reads + g.page_size
    # One read and one write command per length, built once: each batch only moves
    # their IOVA (the batch has run, on any backend, before the next one is set up).
    rw_cmds: list[Any] = []
    for length in lengths:
        slot = _TMP_SIZE * (length - 1)
        rw_cmds += [
            test_cmd(u.IOMMU_TEST_OP_ACCESS_RW, access_id, access_rw={
                "length": length, "uptr": reads + slot, "flags": def_flags}),
            test_cmd(u.IOMMU_TEST_OP_ACCESS_RW, access_id, access_rw={
                "length": length, "uptr": writes + slot,
                "flags": def_flags | u.MOCK_ACCESS_RW_WRITE})]
    rw_calls: list[Call] = [("ioctl", fd.fd, u.IOMMU_TEST_CMD, cmd) for cmd in rw_cmds]
    try:
        for at in range(iova + g.page_size - _SWEEP, iova + g.page_size + _SWEEP):
            offset = at - iova
            data = rng.randbytes(_TMP_SIZE * len(lengths))
            for cmd in rw_cmds:
                cmd.access_rw.iova = at
            calls: list[Call] = [("poke", writes, data), *rw_calls,
                                 ("peek", reads, len(data)),
                                 ("peek", g.buffer + offset, len(lengths))]
            outcomes = batch(backend, calls, stop_on_error=True)
            outcomes[-1].unwrap()  # the first failed call, as the C loop stops there
            got_reads, window = outcomes[-2].value, outcomes[-1].value
            if not _reads_match(contents, offset, data, got_reads):
                # Walk the lengths in order to name the first read that differs.
                for length in lengths:
                    slot = _TMP_SIZE * (length - 1)
                    _expect_same(bytes(contents[offset:offset + length]),
                                 got_reads[slot:slot + length], "read", at, length)
                    contents[offset:offset + length] = data[slot:slot + length]
            last = _TMP_SIZE * (len(lengths) - 1)
            contents[offset:offset + len(lengths)] = data[last:last + len(lengths)]
            _expect_same(bytes(contents[offset:offset + len(lengths)]), window, "write", at,
                         len(lengths))
    finally:
        backend.munmap(reads, 2 * g.page_size)

    # Multi-page: the whole buffer in one read.
    whole = backend.alloc(g.buffer_size)
    try:
        Access(fd, access_id).rw(iova, whole, g.buffer_size, def_flags)
        _expect_same(backend.peek(g.buffer, g.buffer_size),
                     backend.peek(whole, g.buffer_size), "read", iova, g.buffer_size)
    finally:
        backend.munmap(whole, g.buffer_size)


def _triangle_mask() -> int:
    """Bytes ``j <= k`` of each slot ``k`` of the slots after the first: see
    :func:`_reads_match`."""
    mask = bytearray(_TMP_SIZE * (_TMP_SIZE - 2))
    for k in range(_TMP_SIZE - 2):
        mask[_TMP_SIZE * k:_TMP_SIZE * k + k + 1] = b"\xff" * (k + 1)
    return int.from_bytes(mask, "little")


_TRIANGLE = _triangle_mask()


def _reads_match(contents: bytearray, offset: int, data: bytes, got_reads: bytes) -> bool:
    """Whether every read of one IOVA's sweep saw what the buffer held, checked at once.

    Read L (lengths 1..63, in slot L-1) comes right after write L-1, which stored the
    first L-1 bytes of data slot L-2 at ``offset``; its last byte was not written in
    this sweep yet. So read L must be data slot L-2's first L-1 bytes, then
    ``contents[offset + L - 1]``: the last bytes of all reads (every 65th byte) are the
    window as it was, and the rest is a triangle of the data, one slot behind.
    """
    count = _TMP_SIZE - 1
    if got_reads[0:_TMP_SIZE * count:_TMP_SIZE + 1] != contents[offset:offset + count]:
        return False
    span = _TMP_SIZE * (count - 1)
    reads = int.from_bytes(got_reads[_TMP_SIZE:_TMP_SIZE + span], "little")
    written = int.from_bytes(data[:span], "little")
    return not (reads ^ written) & _TRIANGLE


def _expect_same(in_buffer: bytes, in_tmp: bytes, what: str, iova: int, length: int) -> None:
    if in_buffer != in_tmp:
        raise AssertionError(
            f"ACCESS_RW {what} of {length} bytes at IOVA {iova:#x}: the buffer holds "
            f"{in_buffer.hex()}, the user copy {in_tmp.hex()}")
