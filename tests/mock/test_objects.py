"""The object table: IDs, reservation, users refcounts, DESTROY, close."""

from __future__ import annotations

from errno import EBUSY, ENOENT

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.objects import IommufdObject, ObjectTable
from tests.mock.helpers import Fd, errno_of


def test_ids_from_one_lowest_free_first() -> None:
    table = ObjectTable()
    assert [table.alloc() for _ in range(3)] == [1, 2, 3]
    table.erase(2)
    assert table.alloc() == 2
    assert table.alloc() == 4


def test_reserved_and_tombstone_entries_load_as_nothing() -> None:
    table = ObjectTable()
    index = table.alloc()
    assert table.load(index) is None
    obj = IommufdObject()
    table.store(index, obj)
    assert table.load(index) is obj
    table.store(index, None)  # a tombstone
    assert table.load(index) is None
    assert table.alloc() == 2  # the tombstone keeps its ID


def test_destroy_missing_reserved_and_zero(fd: Fd) -> None:
    assert errno_of(fd.destroy, 0) == ENOENT
    assert errno_of(fd.destroy, 7) == ENOENT
    ioas = fd.ioas()
    fd.destroy(ioas)
    assert errno_of(fd.destroy, ioas) == ENOENT


def test_id_reuse_after_destroy(fd: Fd) -> None:
    a, b, c = fd.ioas(), fd.ioas(), fd.ioas()
    assert (a, b, c) == (1, 2, 3)
    fd.destroy(b)
    assert fd.ioas() == 2


def test_busy_while_used_and_wrong_type_is_enoent(fd: Fd) -> None:
    ioas = fd.ioas()
    stdev, hwpt, idev = fd.mock_domain(ioas)
    assert (stdev, idev, hwpt) == (2, 3, 4)
    assert errno_of(fd.destroy, ioas) == EBUSY     # the HWPT holds it
    assert errno_of(fd.destroy, hwpt) == EBUSY     # the device holds it
    assert errno_of(fd.destroy, idev) == EBUSY     # the driver (selftest obj) holds it
    # A device ID is not an IOAS: ENOENT, not EINVAL.
    assert errno_of(fd.map, idev, fd.be.alloc(4096), 4096) == ENOENT
    fd.destroy(stdev)                               # detaches, frees the auto domain
    assert errno_of(fd.destroy, hwpt) == ENOENT
    fd.destroy(ioas)


def test_close_destroys_everything_and_unpins(be: MockBackend) -> None:
    fd = Fd(be)
    buf = be.alloc(8 * 4096)
    ioas = fd.ioas()
    fd.mock_domain(ioas)
    fd.map(ioas, buf, 8 * 4096)
    fd.check_refs(buf, 8 * 4096, 1)
    ctx = be.kernel.files.lookup(fd.fd).ctx  # type: ignore[attr-defined]
    fd.close()
    assert len(ctx.objects) == 0 and not ctx.groups
    again = Fd(be)
    again.check_refs(buf, 8 * 4096, 0)


def test_access_keeps_the_context_alive(be: MockBackend) -> None:
    fd = Fd(be)
    ioas = fd.ioas()
    access_fd = fd.create_access(ioas)
    ctx = be.kernel.files.lookup(fd.fd).ctx  # type: ignore[attr-defined]
    fd.close()
    assert len(ctx.objects) == 2  # the context lives while the access fd is open
    be.close(access_fd)
    assert len(ctx.objects) == 0


def test_option_rlimit_mode_needs_empty_context(fd: Fd) -> None:
    opt = u.ffi.new("struct iommu_option *", {"size": 24, "option_id": 0,
                                              "op": u.IOMMU_OPTION_OP_SET, "val64": 1})
    fd.ioctl(u.IOMMU_OPTION, opt)
    fd.ioas()
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == EBUSY
