"""IOMMU_TEST_OP_ACCESS_REPLACE_IOAS takes the replaced access, and only it, off the
old IOAS (device.c keeps the old access-list ID before iopt_add_access() hands out
the new one)."""

from __future__ import annotations

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.interval_tree import U64_MAX
from tests.mock.helpers import PAGE_SIZE, Fd

IOVA = 1 << 24


def _replace(fd: Fd, access_fd: int, ioas: int) -> None:
    fd.test(u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, access_fd,
            access_replace_ioas={"ioas_id": ioas})


def test_replace_leaves_the_other_access_on_the_old_ioas(be: MockBackend, fd: Fd) -> None:
    ioas, other = fd.ioas(), fd.ioas()
    buf = be.alloc(PAGE_SIZE)
    fd.map(ioas, buf, PAGE_SIZE, iova=IOVA)
    pinning = fd.create_access(ioas, pin=True)
    moved = fd.create_access(ioas, pin=False)
    fd.access_pages(pinning, IOVA, PAGE_SIZE, buf)

    _replace(fd, moved, other)
    assert be.take_splats() == []
    # The pinning access is still told about the unmap, so it unpins and it succeeds.
    assert fd.unmap(ioas, 0, U64_MAX) == PAGE_SIZE
    be.close(pinning)
    be.close(moved)
    fd.close()


def test_old_ioas_maps_unaligned_once_the_pinning_access_left(be: MockBackend,
                                                              fd: Fd) -> None:
    # Seen from outside by comparing with a 7.3.4 guest: the kernel maps here.
    dst, src = fd.ioas(), fd.ioas()
    plain = fd.create_access(src, pin=False)
    pinning = fd.create_access(src, pin=True)  # src aligns IOVAs to PAGE_SIZE now
    _replace(fd, pinning, dst)

    buf = be.alloc(PAGE_SIZE)
    half = PAGE_SIZE // 2
    assert fd.map(src, buf + half, half, iova=IOVA + half) == IOVA + half
    assert be.take_splats() == []
    fd.unmap(src, 0, U64_MAX)
    be.close(pinning)
    be.close(plain)
    fd.close()
