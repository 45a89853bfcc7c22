"""The selftest dma-buf exporter and IOAS_MAP_FILE of a dma-buf on the mock
(selftest.c DMABUF_GET / DMABUF_REVOKE; pages.c IOPT_ADDRESS_DMABUF)."""

from __future__ import annotations

from errno import EBADF, EINVAL, ENODEV

import uapi_headers as u
from backends.mock import MockBackend
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of


def _get(fd: Fd, length: int) -> int:
    cmd = u.ffi.new("struct iommu_test_cmd *", {
        "size": u.ffi.sizeof("struct iommu_test_cmd"), "op": u.IOMMU_TEST_OP_DMABUF_GET,
        "dmabuf_get": {"length": length}})
    return fd.ioctl(u.IOMMU_TEST_CMD, cmd)


def _revoke(fd: Fd, dfd: int, revoked: bool) -> None:
    fd.test(u.IOMMU_TEST_OP_DMABUF_REVOKE,
            dmabuf_revoke={"dmabuf_fd": dfd, "revoked": int(revoked)})


def test_get_returns_the_new_fd_and_checks_the_length(be: MockBackend, fd: Fd) -> None:
    dfd = _get(fd, 1)  # rounded up to a page
    assert dfd == fd.fd + 1
    assert errno_of(_get, fd, 0) == EINVAL
    assert errno_of(_get, fd, 512 * PAGE_SIZE + 1) == EINVAL
    assert errno_of(_revoke, fd, 99, True) == EBADF
    assert errno_of(_revoke, fd, fd.fd, True) == EINVAL  # not a dma-buf
    be.close(dfd)
    fd.close()


def test_map_is_unpinned_and_revoke_unmaps_the_domains(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    _stdev, hwpt, idev = fd.mock_domain(ioas)
    dfd = _get(fd, 4 * PAGE_SIZE)
    iova = fd.map_file(ioas, dfd, PAGE_SIZE, 2 * PAGE_SIZE)
    assert be.proc_status("VmPin") == 0  # nothing pinned, nothing accounted
    domain = be.kernel.files.lookup(fd.fd).ctx.objects.load(hwpt).domain  # type: ignore[attr-defined]
    # The dma-buf's memory is one physically contiguous run from the map's start.
    phys = domain.iova_to_phys(iova)
    assert phys
    assert domain.iova_to_phys(iova + 2 * PAGE_SIZE - 1) == phys + 2 * PAGE_SIZE - 1
    _revoke(fd, dfd, True)
    assert domain.mappings() == []
    assert errno_of(fd.map_file, ioas, dfd, 0, PAGE_SIZE) == ENODEV
    # A new domain is not filled from a revoked dma-buf, and nothing WARNs.
    fd.hwpt_alloc(idev, ioas)
    _revoke(fd, dfd, False)
    second = fd.map_file(ioas, dfd, 0, PAGE_SIZE)
    fd.unmap(ioas, iova, 2 * PAGE_SIZE)
    fd.unmap(ioas, second, PAGE_SIZE)
    be.close(dfd)
    fd.close()


def test_access_cannot_use_dmabuf_pages(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    dfd = _get(fd, PAGE_SIZE)
    iova = fd.map_file(ioas, dfd, 0, PAGE_SIZE)
    access = fd.create_access(ioas)
    assert errno_of(fd.access_pages, access, iova, PAGE_SIZE) == EINVAL
    be.close(access)
    be.close(dfd)
    fd.close()
