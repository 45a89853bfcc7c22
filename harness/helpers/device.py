"""Device queries: IOMMU_GET_HW_INFO with the checks iommufd_utils.h makes on every call.

``_test_cmd_get_hw_info`` does not only issue the ioctl: on success it asserts that the
kernel reports the selftest driver's data type and struct size, that a user buffer larger
than that struct had its tail zeroed, and that the fields the buffer covers hold the
driver's values. :func:`get_hw_info` makes the same assertions, so a ported test checks
what the C test checks::

    info = get_hw_info(fd, dev_id)                     # no buffer (data_len 0)
    buf = hw_info_buffer(fd, 16)                       # 16 bytes, pre-filled with 0xaa
    get_hw_info(fd, dev_id, data_uptr=buf, data_len=16)
    assert info.max_pasid_log2 == 0
"""

from __future__ import annotations

from typing import NamedTuple

import uapi_headers as u
from harness.helpers.core import Iommufd, new_cmd

__all__ = ["HW_INFO_FILL", "HwInfo", "get_hw_info", "hw_info_buffer"]

HW_INFO_SIZE = int(u.ffi.sizeof("struct iommu_test_hw_info"))
"""sizeof(struct iommu_test_hw_info): what the selftest driver reports."""

HW_INFO_FILL = 0xAA
"""The byte :func:`hw_info_buffer` fills a buffer with, so "the kernel zeroed the tail"
and "the kernel wrote this field" are seen, not assumed from zeroed memory."""


class HwInfo(NamedTuple):
    """The out fields of IOMMU_GET_HW_INFO."""

    data_type: int
    data_len: int
    capabilities: int
    max_pasid_log2: int


def hw_info_buffer(fd: Iommufd, length: int) -> int:
    """``length`` bytes of user memory filled with :data:`HW_INFO_FILL`; returns its address."""
    addr = fd.backend.alloc(max(length, 1), shared=False)
    fd.backend.poke(addr, bytes([HW_INFO_FILL]) * length)
    return addr


def _check_user_data(fd: Iommufd, data_uptr: int, data_len: int, kernel_len: int) -> None:
    """The checks of _test_cmd_get_hw_info() on the user buffer after a success."""
    if not data_uptr:
        return
    got = fd.backend.peek(data_uptr, data_len) if data_len else b""
    tail = got[kernel_len:]
    assert tail == bytes(len(tail)), f"trailing bytes not zeroed: {tail.hex()}"
    info = u.ffi.new("struct iommu_test_hw_info *")
    covered = min(data_len, HW_INFO_SIZE)
    u.ffi.memmove(info, got[:covered], covered)
    if data_len >= u.offsetofend("struct iommu_test_hw_info", "test_reg"):
        assert info.test_reg == u.IOMMU_HW_INFO_SELFTEST_REGVAL, hex(info.test_reg)
    if data_len >= u.offsetofend("struct iommu_test_hw_info", "flags"):
        assert info.flags == 0, hex(info.flags)


def get_hw_info(fd: Iommufd, dev_id: int, data_type: int = u.IOMMU_HW_INFO_TYPE_DEFAULT,
                data_uptr: int = 0, data_len: int = 0) -> HwInfo:
    """IOMMU_GET_HW_INFO of device ``dev_id`` into ``data_len`` bytes at ``data_uptr``
    (_test_cmd_get_hw_info): a type other than DEFAULT is requested with
    IOMMU_HW_INFO_FLAG_INPUT_TYPE. Raises OSError on failure; on success asserts the
    selftest type, size, zeroed tail and register values as the C helper does."""
    cmd = new_cmd("iommu_hw_info", {
        "dev_id": dev_id, "data_len": data_len, "data_uptr": data_uptr,
        "in_data_type": data_type,
    })
    if data_type != u.IOMMU_HW_INFO_TYPE_DEFAULT:
        cmd.flags |= u.IOMMU_HW_INFO_FLAG_INPUT_TYPE
    fd.ioctl(u.IOMMU_GET_HW_INFO, cmd)
    assert cmd.out_data_type == u.IOMMU_HW_INFO_TYPE_SELFTEST, hex(cmd.out_data_type)
    assert cmd.data_len == HW_INFO_SIZE, cmd.data_len
    _check_user_data(fd, data_uptr, data_len, int(cmd.data_len))
    return HwInfo(int(cmd.out_data_type), int(cmd.data_len), int(cmd.out_capabilities),
                  int(cmd.out_max_pasid_log2))
