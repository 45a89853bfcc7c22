"""The IOAS's IOVA alignment (IOMMU_IOAS_IOVA_RANGES ``out_iova_alignment``) follows the
domains and accesses attached right now: every attach and every detach recomputes it
(drivers/iommu/iommufd/io_pagetable.c:1300-1334, iopt_calculate_iova_alignment, called
from iopt_table_remove_domain at :1363 and iopt_remove_access at :1577). A stale,
too large alignment shows as EINVAL on an unaligned IOAS_MAP, as a 7.3.4 guest showed
after IOMMU_TEST_OP_ACCESS_REPLACE_IOAS."""

from __future__ import annotations

from errno import EADDRINUSE

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.interval_tree import U64_MAX
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of

IOVA = u.MOCK_APERTURE_START


def _alignment(fd: Fd, ioas: int) -> int:
    return fd.iova_ranges(ioas)[1]


def _maps_one_byte(be: MockBackend, fd: Fd, ioas: int) -> bool:
    """An IOAS_MAP of length 1 at an odd IOVA: fine only with alignment 1."""
    buf = be.alloc(PAGE_SIZE)
    if errno_of(fd.map, ioas, buf + 1, 1, iova=IOVA + 1):
        return False
    fd.unmap(ioas, 0, U64_MAX)
    return True


def test_closing_a_pinning_access_lowers_the_alignment(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    access = fd.create_access(ioas, pin=True)  # needs_pin_pages: PAGE_SIZE (device.c:1278)
    assert _alignment(fd, ioas) == PAGE_SIZE
    assert not _maps_one_byte(be, fd, ioas)
    be.close(access)
    assert _alignment(fd, ioas) == 1
    assert _maps_one_byte(be, fd, ioas)
    fd.close()


def test_replace_moves_the_alignment_with_the_access(be: MockBackend, fd: Fd) -> None:
    old, new = fd.ioas(), fd.ioas()
    access = fd.create_access(old, pin=True)
    fd.test(u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, access, access_replace_ioas={"ioas_id": new})
    assert (_alignment(fd, old), _alignment(fd, new)) == (1, PAGE_SIZE)
    assert _maps_one_byte(be, fd, old)
    assert not _maps_one_byte(be, fd, new)
    be.close(access)
    assert _alignment(fd, new) == 1
    fd.close()


def test_a_failed_replace_leaves_both_alignments(be: MockBackend, fd: Fd) -> None:
    # The new IOAS holds an area a PAGE_SIZE alignment would break: iopt_add_access()
    # fails EADDRINUSE (io_pagetable.c:1194-1219) and the access stays where it was.
    old, new = fd.ioas(), fd.ioas()
    buf = be.alloc(PAGE_SIZE)
    fd.map(new, buf + 1, 1, iova=IOVA + 1)
    access = fd.create_access(old, pin=True)
    assert errno_of(fd.test, u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, access,
                    access_replace_ioas={"ioas_id": new}) == EADDRINUSE
    assert (_alignment(fd, old), _alignment(fd, new)) == (PAGE_SIZE, 1)
    be.close(access)
    assert _alignment(fd, old) == 1
    fd.close()


def test_destroying_the_mock_domain_lowers_the_alignment(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    stdev, _, _ = fd.mock_domain(ioas)  # its smallest page: MOCK_PAGE_SIZE
    assert _alignment(fd, ioas) == u.MOCK_PAGE_SIZE
    fd.destroy(stdev)  # the automatic HWPT goes with its last device
    assert _alignment(fd, ioas) == 1
    assert _maps_one_byte(be, fd, ioas)
    fd.close()


def test_a_user_hwpt_holds_the_alignment_until_destroyed(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    stdev, _, idev = fd.mock_domain(ioas)
    hwpt = fd.hwpt_alloc(idev, ioas)
    fd.destroy(stdev)
    # The allocated HWPT's domain stays in the IOAS with no device on it.
    assert _alignment(fd, ioas) == u.MOCK_PAGE_SIZE
    fd.destroy(hwpt)
    assert _alignment(fd, ioas) == 1
    fd.close()


def test_the_largest_remaining_user_sets_the_alignment(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    stdev, _, _ = fd.mock_domain(ioas)
    access = fd.create_access(ioas, pin=True)
    assert _alignment(fd, ioas) == PAGE_SIZE
    be.close(access)
    assert _alignment(fd, ioas) == u.MOCK_PAGE_SIZE  # the domain's, not 1
    fd.destroy(stdev)
    assert _alignment(fd, ioas) == 1
    fd.close()
