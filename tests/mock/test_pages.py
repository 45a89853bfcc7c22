"""Pinned pages: one pin per page while a domain or an access needs it, and accounting."""

from __future__ import annotations

from errno import EFAULT, EINVAL, ENOMEM

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.interval_tree import U64_MAX
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of, new


def test_lazy_without_domain_then_pinned_once(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    buf = be.alloc(4 * PAGE_SIZE)
    iova = fd.map(ioas, buf, 4 * PAGE_SIZE, u.MOCK_APERTURE_START)
    fd.check_refs(buf, 4 * PAGE_SIZE, 0)  # nothing needs the pages yet
    _, hwpt1, _ = fd.mock_domain(ioas)
    fd.check_refs(buf, 4 * PAGE_SIZE, 1)
    hwpt2 = fd.hwpt_alloc(fd.mock_domain(fd.ioas())[2], ioas)  # a second domain, same IOAS
    fd.check_refs(buf, 4 * PAGE_SIZE, 1)  # still one pin per page
    fd.check_map(hwpt1, iova, buf, 4 * PAGE_SIZE)
    fd.check_map(hwpt2, iova, buf, 4 * PAGE_SIZE)
    fd.unmap(ioas, iova, 4 * PAGE_SIZE)
    fd.check_refs(buf, 4 * PAGE_SIZE, 0)


def test_copy_shares_the_pins(be: MockBackend, fd: Fd) -> None:
    a, b = fd.ioas(), fd.ioas()
    fd.mock_domain(a)
    fd.mock_domain(b)
    buf = be.alloc(2 * PAGE_SIZE)
    iova = fd.map(a, buf, 2 * PAGE_SIZE)
    fd.copy(b, a, iova, 2 * PAGE_SIZE)
    fd.check_refs(buf, 2 * PAGE_SIZE, 1)
    fd.map(b, buf, 2 * PAGE_SIZE)  # a second, independent mapping pins again
    fd.check_refs(buf, 2 * PAGE_SIZE, 2)


def test_bad_va_is_efault_at_pin_time(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    fd.mock_domain(ioas)
    buf = be.alloc(8 * PAGE_SIZE)
    be.munmap(buf + 4 * PAGE_SIZE, 4 * PAGE_SIZE)
    assert errno_of(fd.map, ioas, buf, 8 * PAGE_SIZE) == EFAULT
    fd.check_refs(buf, 4 * PAGE_SIZE, 0)
    nodomain = fd.ioas()
    iova = fd.map(nodomain, buf, 8 * PAGE_SIZE, u.MOCK_APERTURE_START)  # lazily accepted...
    assert errno_of(fd.mock_domain, nodomain) == EFAULT  # ...until a domain needs it
    fd.unmap(nodomain, iova, 8 * PAGE_SIZE)


def test_map_file_bounds(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    _, hwpt, _ = fd.mock_domain(ioas)
    mfd = be.memfd(4 * PAGE_SIZE)
    assert errno_of(fd.map_file, ioas, mfd, 0, 4 * PAGE_SIZE + 1) == EINVAL
    iova = fd.map_file(ioas, mfd, PAGE_SIZE, 2 * PAGE_SIZE)
    view = be.mmap(mfd, 4 * PAGE_SIZE)
    fd.check_map(hwpt, iova, view + PAGE_SIZE, 2 * PAGE_SIZE)
    be.ftruncate(mfd, 0)
    assert errno_of(fd.map_file, ioas, mfd, 0, PAGE_SIZE) == EINVAL
    exe = be.open("/proc/self/exe")
    assert errno_of(fd.map_file, ioas, exe, 0, PAGE_SIZE) == EINVAL  # not shmem


def test_user_accounting_against_rlimit(be: MockBackend) -> None:
    task = be.kernel.task
    task.cap_ipc_lock = False  # new pages account per user
    task.rlimit_memlock = 4 * PAGE_SIZE
    fd = Fd(be)
    ioas = fd.ioas()
    fd.mock_domain(ioas)
    buf = be.alloc(8 * PAGE_SIZE)
    iova = fd.map(ioas, buf, 4 * PAGE_SIZE)
    assert task.user.locked_vm == 4 and be.proc_status("VmPin") == 16
    assert errno_of(fd.map, ioas, buf + 4 * PAGE_SIZE, PAGE_SIZE) == ENOMEM
    fd.check_refs(buf + 4 * PAGE_SIZE, PAGE_SIZE, 0)
    fd.unmap(ioas, iova, 4 * PAGE_SIZE)
    assert task.user.locked_vm == 0 and be.proc_status("VmPin") == 0


def test_mm_accounting_mode(be: MockBackend) -> None:
    task = be.kernel.task
    task.cap_ipc_lock = False
    fd = Fd(be)
    fd.ioctl(u.IOMMU_OPTION, new("iommu_option", option_id=u.IOMMU_OPTION_RLIMIT_MODE,
                                 op=u.IOMMU_OPTION_OP_SET, val64=1))
    ioas = fd.ioas()
    fd.mock_domain(ioas)
    fd.map(ioas, be.alloc(2 * PAGE_SIZE), 2 * PAGE_SIZE)
    assert be.proc_status("VmLck") == 8 and be.proc_status("VmPin") == 8
    fd.unmap(ioas, 0, U64_MAX)
    assert be.proc_status("VmLck") == 0


def test_temp_memory_limit(fd: Fd) -> None:
    assert errno_of(fd.test, u.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
                    memory_limit={"limit": 11}) == EINVAL
    fd.test(u.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, memory_limit={"limit": 16})
    ioas = fd.ioas()
    fd.mock_domain(ioas)
    buf = fd.be.alloc(64 * PAGE_SIZE)
    fd.map(ioas, buf, 64 * PAGE_SIZE)  # tiny batches, same result
    fd.check_refs(buf, 64 * PAGE_SIZE, 1)
