"""IOMMU_TEST_CMD ops: mock domains, replace, accesses and their unmap notification."""

from __future__ import annotations

from errno import EBADE, EBADFD, EBUSY, EINVAL, ENOENT, ENOMEM, EOPNOTSUPP, EPERM

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.interval_tree import U64_MAX
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of, new

APERTURE = u.MOCK_APERTURE_START


def test_auto_domains_are_shared_and_freed(fd: Fd) -> None:
    ioas = fd.ioas()
    stdev1, hwpt1, _ = fd.mock_domain(ioas)
    stdev2, hwpt2, _ = fd.mock_domain(ioas)
    assert hwpt1 == hwpt2  # a compatible auto domain is reused
    other = fd.ioas()
    new_hwpt = fd.replace(stdev1, other)
    assert new_hwpt != hwpt1
    assert fd.replace(stdev1, new_hwpt) == new_hwpt  # same HWPT: no-op
    fd.destroy(stdev2)  # hwpt1's last device left: gone
    assert errno_of(fd.replace, stdev1, hwpt1) == ENOENT
    fd.replace(stdev1, ioas)
    assert errno_of(fd.destroy, new_hwpt) == ENOENT


def test_manual_hwpt_rotation(fd: Fd) -> None:
    ioas = fd.ioas()
    stdev, _, idev = fd.mock_domain(ioas)
    assert errno_of(fd.hwpt_alloc, idev, ioas, ~u.IOMMU_HWPT_ALLOC_NEST_PARENT & 0xFFFFFFFF) \
        == EOPNOTSUPP
    assert errno_of(fd.hwpt_alloc, ioas, ioas) == ENOENT  # dev_id is no device
    assert errno_of(fd.hwpt_alloc, idev, idev) == EINVAL  # pt_id is no IOAS/HWPT
    assert errno_of(fd.hwpt_alloc, idev, ioas, u.IOMMU_HWPT_ALLOC_NEST_PARENT
                    | u.IOMMU_HWPT_FAULT_ID_VALID) == EOPNOTSUPP
    a = fd.hwpt_alloc(idev, ioas)
    b = fd.hwpt_alloc(idev, ioas, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    fd.replace(stdev, a)
    assert errno_of(fd.destroy, a) == EBUSY
    fd.replace(stdev, b)
    fd.destroy(a)
    stdev2, hwpt2, _ = fd.mock_domain(b)
    assert hwpt2 == b
    fd.destroy(stdev2)
    fd.replace(stdev, ioas)
    fd.destroy(b)


def test_dirty_domain_refuses_no_dirty_device(fd: Fd) -> None:
    ioas = fd.ioas()
    _, _, idev = fd.mock_domain(ioas, u.MOCK_FLAGS_DEVICE_NO_DIRTY)
    assert errno_of(fd.hwpt_alloc, idev, ioas, u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING) \
        == EOPNOTSUPP
    _, _, idev2 = fd.mock_domain(fd.ioas())
    dirty = fd.hwpt_alloc(idev2, ioas, u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
    assert errno_of(fd.mock_domain, dirty, u.MOCK_FLAGS_DEVICE_NO_DIRTY) == EINVAL
    assert errno_of(fd.mock_domain, ioas, 1 << 8) == EINVAL  # unknown device flag


def test_get_hw_info(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    _, _, idev = fd.mock_domain(ioas)
    _, _, pasid_dev = fd.mock_domain(ioas, u.MOCK_FLAGS_DEVICE_PASID)
    data = be.alloc(PAGE_SIZE)
    be.poke(data, b"\xff" * 16)
    cmd = new("iommu_hw_info", dev_id=idev, data_len=16, data_uptr=data)
    fd.ioctl(u.IOMMU_GET_HW_INFO, cmd)
    assert cmd.data_len == 8 and cmd.out_max_pasid_log2 == 0
    raw = be.peek(data, 16)
    assert int.from_bytes(raw[4:8], "little") == u.IOMMU_HW_INFO_SELFTEST_REGVAL
    assert raw[8:] == bytes(8)  # the tail is cleared
    cmd = new("iommu_hw_info", dev_id=pasid_dev, flags=u.IOMMU_HW_INFO_FLAG_INPUT_TYPE,
              in_data_type=u.IOMMU_HW_INFO_TYPE_SELFTEST)
    fd.ioctl(u.IOMMU_GET_HW_INFO, cmd)
    assert cmd.out_max_pasid_log2 == u.MOCK_PASID_WIDTH
    cmd = new("iommu_hw_info", dev_id=idev, flags=u.IOMMU_HW_INFO_FLAG_INPUT_TYPE,
              in_data_type=u.IOMMU_HW_INFO_TYPE_SELFTEST + 1)
    assert errno_of(fd.ioctl, u.IOMMU_GET_HW_INFO, cmd) == EOPNOTSUPP
    fd.test(u.IOMMU_TEST_OP_DEV_CHECK_CACHE, idev,
            check_dev_cache={"id": 3, "cache": u.IOMMU_TEST_DEV_CACHE_DEFAULT})
    assert errno_of(fd.test, u.IOMMU_TEST_OP_DEV_CHECK_CACHE, idev,
                    check_dev_cache={"id": 4, "cache": u.IOMMU_TEST_DEV_CACHE_DEFAULT}) == EINVAL


def test_access_pages_and_unmap_notification(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    buf = be.alloc(8 * PAGE_SIZE)
    access = fd.create_access(ioas)
    fd.map(ioas, buf, 8 * PAGE_SIZE, APERTURE)
    item = fd.access_pages(access, APERTURE + PAGE_SIZE, 2 * PAGE_SIZE, buf + PAGE_SIZE)
    fd.check_refs(buf + PAGE_SIZE, 2 * PAGE_SIZE, 1)
    again = fd.access_pages(access, APERTURE + PAGE_SIZE, 2 * PAGE_SIZE)
    fd.check_refs(buf + PAGE_SIZE, 2 * PAGE_SIZE, 1)  # same range: one pin
    fd.test(u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, access,
            destroy_access_pages={"access_pages_id": again})
    # The unmap asks the access to unpin; its item is gone afterwards.
    assert fd.unmap(ioas, APERTURE, 8 * PAGE_SIZE) == 8 * PAGE_SIZE
    assert errno_of(fd.test, u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, access,
                    destroy_access_pages={"access_pages_id": item}) == ENOENT
    fd.check_refs(buf, 8 * PAGE_SIZE, 0)
    assert errno_of(fd.access_pages, 1234, APERTURE, PAGE_SIZE) == EBADFD
    assert errno_of(fd.access_pages, access, APERTURE, 17 * 1024 * 1024) == ENOMEM
    assert errno_of(fd.access_pages, access, APERTURE, PAGE_SIZE) == ENOENT


def test_pin_access_forces_page_alignment(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    fd.map(ioas, be.alloc(PAGE_SIZE) + 2048, 2048, APERTURE)
    assert errno_of(fd.create_access, ioas) == 98  # EADDRINUSE: an area breaks PAGE_SIZE
    plain = fd.create_access(ioas, pin=False)
    assert errno_of(fd.access_pages, plain, APERTURE, 2048) == EOPNOTSUPP


def test_access_rw_fast_and_slow(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    buf = be.alloc(4 * PAGE_SIZE)
    be.poke(buf, bytes(range(256)) * 64)
    fd.map(ioas, buf, 4 * PAGE_SIZE, APERTURE + 2048)
    access = fd.create_access(ioas, pin=False)
    tmp = be.alloc(PAGE_SIZE * 4)
    for flags in (0, u.MOCK_ACCESS_RW_SLOW_PATH):
        for iova, length in ((APERTURE + 2048 + 10, 100), (APERTURE + 2048 + 4000, 200),
                             (APERTURE + 2048, 4 * PAGE_SIZE)):
            fd.test(u.IOMMU_TEST_OP_ACCESS_RW, access, access_rw={
                "iova": iova, "length": length, "uptr": tmp, "flags": flags})
            off = iova - APERTURE - 2048
            assert be.peek(tmp, length) == be.peek(buf + off, length)
        be.poke(tmp, b"W" * 64)
        fd.test(u.IOMMU_TEST_OP_ACCESS_RW, access, access_rw={
            "iova": APERTURE + 2048 + PAGE_SIZE - 32, "length": 64, "uptr": tmp,
            "flags": flags | u.MOCK_ACCESS_RW_WRITE})
        assert be.peek(buf + PAGE_SIZE - 32, 64) == b"W" * 64
    ro = fd.ioas()
    fd.map(ro, buf, PAGE_SIZE, APERTURE, flags=u.IOMMU_IOAS_MAP_READABLE)
    fd.test(u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, access, access_replace_ioas={"ioas_id": ro})
    assert errno_of(fd.test, u.IOMMU_TEST_OP_ACCESS_RW, access, access_rw={
        "iova": APERTURE, "length": 8, "uptr": tmp, "flags": u.MOCK_ACCESS_RW_WRITE}) == EPERM
    assert errno_of(fd.test, u.IOMMU_TEST_OP_ACCESS_RW, access, access_rw={
        "iova": APERTURE + PAGE_SIZE, "length": 8, "uptr": tmp}) == ENOENT


def test_memfd_access_rw(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    mfd = be.memfd(2 * PAGE_SIZE)
    view = be.mmap(mfd, 2 * PAGE_SIZE)
    be.poke(view + 100, b"from the file")
    iova = fd.map_file(ioas, mfd, 0, 2 * PAGE_SIZE)
    access = fd.create_access(ioas, pin=False)
    tmp = be.alloc(PAGE_SIZE)
    fd.test(u.IOMMU_TEST_OP_ACCESS_RW, access, access_rw={
        "iova": iova + 100, "length": 13, "uptr": tmp})
    assert be.peek(tmp, 13) == b"from the file"


def test_ioas_destroy_with_access_and_change_process(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    access = fd.create_access(ioas)
    assert errno_of(fd.destroy, ioas) == EBUSY
    change = new("iommu_ioas_change_process")
    fd.map(ioas, be.alloc(PAGE_SIZE), PAGE_SIZE)
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_CHANGE_PROCESS, change) == EINVAL
    fd.unmap(ioas, 0, U64_MAX)
    fd.map_file(ioas, be.memfd(PAGE_SIZE), 0, PAGE_SIZE)
    fd.ioctl(u.IOMMU_IOAS_CHANGE_PROCESS, change)
    be.close(access)
    fd.destroy(ioas)


def test_access_pages_checks_the_page_holding_an_unaligned_uptr(be: MockBackend,
                                                                fd: Fd) -> None:
    # iommufd_test_check_pages() looks the uptr up with get_user_pages_fast(), which
    # rounds it down to its page (7.3.4 answers EBADE, not EFAULT, for a wrong page).
    ioas = fd.ioas()
    buf = be.alloc(2 * PAGE_SIZE)
    fd.map(ioas, buf, 2 * PAGE_SIZE, iova=APERTURE)
    access = fd.create_access(ioas)
    # Inside the pinned page: the same page, so it matches.
    item = fd.access_pages(access, APERTURE, PAGE_SIZE, buf + 1)
    fd.test(u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, access,
            destroy_access_pages={"access_pages_id": item})
    # Inside the next page: a different page.
    assert errno_of(fd.access_pages, access, APERTURE, PAGE_SIZE,
                    buf + PAGE_SIZE + 1) == EBADE
    be.close(access)
    fd.close()
