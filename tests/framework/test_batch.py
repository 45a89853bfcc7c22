"""Batches with links: an earlier ioctl's output feeding a later one, locally and on the wire."""

from __future__ import annotations

from errno import EINVAL, ENOENT

import pytest

import uapi_headers as u
from backends import open_backend
from backends.calls import Link
from backends.kernel.rpc.dispatch import Dispatcher
from backends.kernel.rpc.protocol import ERRNO, OK
from harness.helpers import Ioas, Iommufd, new_cmd
from harness.helpers.batch import IoctlBatch, field_link


@pytest.fixture
def ioas():
    with open_backend("mock") as backend, Iommufd.open(backend) as fd:
        yield Ioas(fd, fd.ioas_alloc())


def test_unmap_takes_the_iova_the_map_chose(ioas: Ioas) -> None:
    buf = ioas.fd.backend.alloc(2 * 4096)
    sweep = IoctlBatch(ioas.fd)
    map_cmd = ioas.map_cmd(buf, 8192)
    mapped = sweep.ioctl(u.IOMMU_IOAS_MAP, map_cmd)
    unmap_cmd = ioas.unmap_cmd(0, 8192)
    sweep.ioctl(u.IOMMU_IOAS_UNMAP, unmap_cmd,
                links=(field_link(mapped, map_cmd, "iova", unmap_cmd, "iova"),))
    outcomes = sweep.run()
    assert [o.ok for o in outcomes] == [True, True]
    assert unmap_cmd.iova == map_cmd.iova != 0
    assert unmap_cmd.length == 8192


def test_an_unexpected_errno_names_the_call(ioas: Ioas) -> None:
    buf = ioas.fd.backend.alloc(4096)
    sweep = IoctlBatch(ioas.fd)
    sweep.ioctl(u.IOMMU_IOAS_MAP, ioas.map_cmd(buf, 4096), expect=EINVAL)
    with pytest.raises(AssertionError, match=r"call 0 .*struct iommu_ioas_map.*expected EINVAL, "
                                             r"got success"):
        sweep.run()


def test_field_link_refuses_fields_of_different_sizes(ioas: Ioas) -> None:
    with pytest.raises(ValueError, match="differ in size"):
        field_link(0, ioas.map_cmd(0, 1), "iova", ioas.unmap_cmd(0, 1), "ioas_id")


def test_dispatcher_applies_links_to_wire_bytes() -> None:
    server = Dispatcher(lambda: open_backend("mock"))
    status, fd = server.handle("open", ("/dev/iommu",))
    assert status == OK
    alloc = new_cmd("iommu_ioas_alloc")
    destroy = new_cmd("iommu_destroy", {"id": 0})
    link = Link(u.ffi.offsetof("struct iommu_destroy", "id"), 0,
                u.ffi.offsetof("struct iommu_ioas_alloc", "out_ioas_id"), 4)
    calls = [("ioctl", (fd, u.IOMMU_IOAS_ALLOC, bytes(u.ffi.buffer(alloc)))),
             ("ioctl", (fd, u.IOMMU_DESTROY, bytes(u.ffi.buffer(destroy)), (tuple(link),))),
             ("ioctl", (fd, u.IOMMU_DESTROY, bytes(u.ffi.buffer(destroy)), (tuple(link),)))]
    status, replies = server.handle("batch", (calls, False))
    assert status == OK
    assert [r[0] for r in replies] == [OK, OK, ERRNO]
    # The second destroy of the same (linked) ID finds nothing.
    assert replies[2][1][0] == ENOENT
    server.close()


def test_a_link_to_a_call_that_is_not_an_ioctl_is_an_error() -> None:
    server = Dispatcher(lambda: open_backend("mock"))
    destroy = new_cmd("iommu_destroy", {"id": 0})
    calls = [("getpid", ()),
             ("ioctl", (3, u.IOMMU_DESTROY, bytes(u.ffi.buffer(destroy)), ((4, 0, 0, 4),)))]
    status, replies = server.handle("batch", (calls, False))
    assert status == OK
    assert replies[1][0] != OK and "not an earlier ioctl" in str(replies[1][1])
    server.close()
