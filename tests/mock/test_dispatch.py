"""iommufd_fops_ioctl(): the ABI checks, in the kernel's order."""

from __future__ import annotations

from errno import E2BIG, EFAULT, EINVAL, ENOENT, ENOTTY, EOPNOTSUPP, EPERM

import pytest

import uapi_headers as u
from backends.mock import MockBackend
from tests.mock.helpers import Fd, errno_of, new


def test_outside_the_table_is_vfio_then_enotty(fd: Fd) -> None:
    assert errno_of(fd.ioctl, u.IOMMU_DESTROY - 1, new("iommu_destroy")) == ENOTTY
    assert fd.ioctl(u.VFIO_GET_API_VERSION) == u.VFIO_API_VERSION


def test_null_and_unreadable_arguments_fault(fd: Fd) -> None:
    assert errno_of(fd.ioctl, u.IOMMU_DESTROY, None) == EFAULT
    assert errno_of(fd.ioctl, u.IOMMU_DESTROY, 0x1234_0000) == EFAULT
    # EFAULT comes before the table hole check.
    hole = (u.IOMMU_DESTROY & ~0xFF) | 0x9F
    assert errno_of(fd.ioctl, hole, None) == EFAULT
    assert errno_of(fd.ioctl, hole, new("iommu_destroy")) == ENOTTY


def test_null_and_untyped_cdata_are_addresses(fd: Fd) -> None:
    for arg in (u.ffi.NULL, u.ffi.cast("struct iommu_destroy *", 0),
                u.ffi.cast("void *", 0x1000)):
        assert errno_of(fd.ioctl, u.IOMMU_DESTROY, arg) == EFAULT


def test_request_must_match_exactly(fd: Fd) -> None:
    # Right nr, but a size/direction encoded in the number: not the table's ioctl.
    assert errno_of(fd.ioctl, u.IOMMU_DESTROY | (8 << 16), new("iommu_destroy")) == ENOTTY


@pytest.mark.parametrize("command", u.IOMMUFD_COMMANDS, ids=lambda c: c.name)
def test_size_rules(fd: Fd, command: u.Command) -> None:
    raw = u.ffi.new("char[]", command.size + 8)
    head = u.ffi.cast("uint32_t *", raw)
    head[0] = command.min_size - 1
    assert errno_of(fd.ioctl, command.request, raw) == EINVAL
    raw[command.size] = b"\x01"
    head[0] = command.size + 8
    assert errno_of(fd.ioctl, command.request, raw) == E2BIG
    raw[command.size] = b"\x00"
    exact = errno_of(fd.ioctl, command.request, raw)
    head[0] = command.size
    assert errno_of(fd.ioctl, command.request, raw) == exact


def test_size_beyond_the_buffer_faults(fd: Fd) -> None:
    raw = u.ffi.new("char[]", 8)
    u.ffi.cast("uint32_t *", raw)[0] = 64
    assert errno_of(fd.ioctl, u.IOMMU_DESTROY, raw) == EFAULT


def test_reply_is_truncated_to_user_size(fd: Fd) -> None:
    ioas = fd.ioas()
    _, _, idev = fd.mock_domain(ioas)
    command = u.command_by_name("IOMMU_GET_HW_INFO")
    raw = u.ffi.new("char[]", command.size)
    info = u.ffi.cast("struct iommu_hw_info *", raw)
    info.size = command.min_size
    info.dev_id = idev
    fd.ioctl(u.IOMMU_GET_HW_INFO, raw)
    assert info.out_capabilities == 0  # past min_size: not written back
    assert info.out_data_type == u.IOMMU_HW_INFO_TYPE_SELFTEST
    assert info.data_len == 8  # the kernel's size comes back...
    assert errno_of(fd.ioctl, u.IOMMU_GET_HW_INFO, raw) == EFAULT  # ...and NULL can't hold it
    info.data_len = 0
    info.size = command.size
    fd.ioctl(u.IOMMU_GET_HW_INFO, raw)
    assert info.out_capabilities & u.IOMMU_HW_CAP_DIRTY_TRACKING


def test_int_argument_is_a_user_address(be: MockBackend, fd: Fd) -> None:
    addr = be.alloc(4096)
    cmd = new("iommu_ioas_alloc")
    be.poke(addr, bytes(u.ffi.buffer(cmd)))
    fd.ioctl(u.IOMMU_IOAS_ALLOC, addr)
    out = u.ffi.from_buffer("struct iommu_ioas_alloc *", bytearray(be.peek(addr, 12)))
    assert out.out_ioas_id == 1


def test_ioas_alloc_flags_and_options(fd: Fd) -> None:
    assert errno_of(fd.ioctl, u.IOMMU_IOAS_ALLOC, new("iommu_ioas_alloc", flags=1)) \
        == EOPNOTSUPP
    opt = new("iommu_option", option_id=u.IOMMU_OPTION_RLIMIT_MODE, op=u.IOMMU_OPTION_OP_GET)
    fd.ioctl(u.IOMMU_OPTION, opt)
    assert opt.val64 == 0
    opt.__reserved = 1
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == EOPNOTSUPP
    opt.__reserved = 0
    opt.option_id = 7
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == EOPNOTSUPP
    opt.option_id = u.IOMMU_OPTION_HUGE_PAGES
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == ENOENT
    opt.option_id = u.IOMMU_OPTION_RLIMIT_MODE
    opt.object_id = 1
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == EOPNOTSUPP
    opt.object_id = 0
    opt.op = u.IOMMU_OPTION_OP_SET
    opt.val64 = 2
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == EINVAL
    fd.be.kernel.task.cap_sys_resource = False
    opt.val64 = 1
    assert errno_of(fd.ioctl, u.IOMMU_OPTION, opt) == EPERM


def test_unknown_test_op(fd: Fd) -> None:
    assert errno_of(fd.test, 999) == EOPNOTSUPP


def test_bad_fd(be: MockBackend) -> None:
    assert errno_of(be.ioctl, 99, u.IOMMU_DESTROY, new("iommu_destroy")) == 9  # EBADF
