"""The kernel's ``iommufd`` fixture group (tools/testing/selftests/iommu/iommufd.c).

The generic ioctl ABI (EINVAL / E2BIG / ENOTTY / EFAULT), the global options, and the VFIO
type1 compat ioctls on an iommufd that has no compat IOAS.
"""

from __future__ import annotations

from errno import E2BIG, EFAULT, EINVAL, ENODEV, ENOENT, ENOTTY
from typing import Any

import uapi_headers as u
from harness import kselftest, marks
from harness.helpers import Iommufd, SelftestGlobals, expect_errno, new_cmd

pytestmark = kselftest.fixture("iommufd")

MOCK_APERTURE_START = u.MOCK_APERTURE_START

# The 16 commands the kernel's cmd_length walks (iommufd.c, TEST_LENGTH list).
CMD_LENGTH_COMMANDS = (
    "IOMMU_DESTROY", "IOMMU_GET_HW_INFO", "IOMMU_HWPT_ALLOC", "IOMMU_HWPT_INVALIDATE",
    "IOMMU_IOAS_ALLOC", "IOMMU_IOAS_IOVA_RANGES", "IOMMU_IOAS_ALLOW_IOVAS", "IOMMU_IOAS_MAP",
    "IOMMU_IOAS_COPY", "IOMMU_IOAS_UNMAP", "IOMMU_OPTION", "IOMMU_VFIO_IOAS",
    "IOMMU_IOAS_MAP_FILE", "IOMMU_VIOMMU_ALLOC", "IOMMU_VDEVICE_ALLOC",
    "IOMMU_IOAS_CHANGE_PROCESS",
)


def _with_tail(struct: str, tail: int) -> tuple[Any, Any]:
    """A zeroed buffer of sizeof(struct) + tail bytes and a struct view of its start.

    The buffer (a char array) is what goes to the ioctl, so the kernel sees the tail too.
    """
    raw = u.ffi.new("char[]", u.ffi.sizeof(struct) + tail)
    return raw, u.ffi.cast(f"{struct} *", raw)


def test_simple_close(iommufd: Iommufd) -> None:
    pass


def test_cmd_fail(iommufd: Iommufd) -> None:
    cmd = new_cmd("iommu_destroy", {"id": 0})
    with expect_errno(ENOENT):
        iommufd.destroy(0)
    with expect_errno(EFAULT):
        iommufd.ioctl(u.IOMMU_DESTROY, None)
    unknown = u.IOMMU_DESTROY - 1  # _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE - 1)
    with expect_errno(ENOTTY):
        iommufd.ioctl(unknown, cmd)


def _test_length(iommufd: Iommufd, name: str) -> None:
    command = u.command_by_name(name)
    raw, cmd = _with_tail(command.struct, 1)
    last = u.ffi.sizeof(command.struct)
    raw[last] = b"\xff"
    cmd.size = command.min_size - 1
    with expect_errno(EINVAL):
        iommufd.ioctl(command.request, raw)
    cmd.size = command.size + 1
    with expect_errno(E2BIG):
        iommufd.ioctl(command.request, raw)
    # The exact size and a zero tail byte must give the same answer.
    cmd.size = command.size
    exact_errno = 0
    try:
        iommufd.ioctl(command.request, raw)
    except OSError as error:
        exact_errno = error.errno or 0
    cmd.size = command.size + 1
    raw[last] = b"\x00"
    if exact_errno:
        with expect_errno(exact_errno):
            iommufd.ioctl(command.request, raw)
    else:
        assert iommufd.ioctl(command.request, raw) == 0, name


def test_cmd_length(iommufd: Iommufd) -> None:
    for name in CMD_LENGTH_COMMANDS:
        _test_length(iommufd, name)


def test_cmd_ex_fail(iommufd: Iommufd) -> None:
    # struct { struct iommu_destroy cmd; __u64 future; }
    raw, cmd = _with_tail("struct iommu_destroy", 8)
    future = u.ffi.cast("uint64_t *", raw + u.ffi.sizeof("struct iommu_destroy"))
    cmd.size = len(u.ffi.buffer(raw))
    cmd.id = 0
    with expect_errno(ENOENT):
        iommufd.ioctl(u.IOMMU_DESTROY, raw)
    future[0] = 1
    with expect_errno(E2BIG):
        iommufd.ioctl(u.IOMMU_DESTROY, raw)
    cmd.size = u.ffi.sizeof("struct iommu_destroy")
    with expect_errno(ENOENT):
        iommufd.ioctl(u.IOMMU_DESTROY, raw)
    cmd.size = u.ffi.sizeof("struct iommu_destroy") - 1
    with expect_errno(EINVAL):
        iommufd.ioctl(u.IOMMU_DESTROY, raw)


@marks.requires("cap_sys_resource",
                reason="setting RLIMIT_MODE needs CAP_SYS_RESOURCE")
def test_global_options(iommufd: Iommufd) -> None:
    cmd = new_cmd("iommu_option", {"option_id": u.IOMMU_OPTION_RLIMIT_MODE,
                                   "op": u.IOMMU_OPTION_OP_GET, "val64": 1})
    assert iommufd.ioctl(u.IOMMU_OPTION, cmd) == 0
    assert cmd.val64 == 0

    cmd.op = u.IOMMU_OPTION_OP_SET
    cmd.val64 = 1
    assert iommufd.ioctl(u.IOMMU_OPTION, cmd) == 0
    cmd.val64 = 2
    with expect_errno(EINVAL):
        iommufd.ioctl(u.IOMMU_OPTION, cmd)

    cmd.op = u.IOMMU_OPTION_OP_GET
    assert iommufd.ioctl(u.IOMMU_OPTION, cmd) == 0
    assert cmd.val64 == 1

    cmd.op = u.IOMMU_OPTION_OP_SET
    cmd.val64 = 0
    assert iommufd.ioctl(u.IOMMU_OPTION, cmd) == 0

    cmd.op = u.IOMMU_OPTION_OP_GET
    cmd.option_id = u.IOMMU_OPTION_HUGE_PAGES
    with expect_errno(ENOENT):
        iommufd.ioctl(u.IOMMU_OPTION, cmd)
    cmd.op = u.IOMMU_OPTION_OP_SET
    with expect_errno(ENOENT):
        iommufd.ioctl(u.IOMMU_OPTION, cmd)


# -- VFIO compatibility ioctls, with no compat IOAS --------------------------

def test_simple_ioctls(iommufd: Iommufd) -> None:
    assert iommufd.ioctl(u.VFIO_GET_API_VERSION) == u.VFIO_API_VERSION
    assert iommufd.ioctl(u.VFIO_CHECK_EXTENSION, u.VFIO_TYPE1v2_IOMMU) == 1


def test_unmap_cmd(iommufd: Iommufd, kglobals: SelftestGlobals) -> None:
    unmap = u.ffi.new("struct vfio_iommu_type1_dma_unmap *",
                      {"iova": MOCK_APERTURE_START, "size": kglobals.page_size})
    unmap.argsz = 1
    with expect_errno(EINVAL):
        iommufd.ioctl(u.VFIO_IOMMU_UNMAP_DMA, unmap)
    unmap.argsz = u.ffi.sizeof("struct vfio_iommu_type1_dma_unmap")
    unmap.flags = 1 << 31
    with expect_errno(EINVAL):
        iommufd.ioctl(u.VFIO_IOMMU_UNMAP_DMA, unmap)
    unmap.flags = 0
    with expect_errno(ENODEV):
        iommufd.ioctl(u.VFIO_IOMMU_UNMAP_DMA, unmap)


def test_map_cmd(iommufd: Iommufd, kglobals: SelftestGlobals) -> None:
    map_cmd = u.ffi.new("struct vfio_iommu_type1_dma_map *",
                        {"iova": MOCK_APERTURE_START, "size": kglobals.page_size,
                         "vaddr": kglobals.buffer})
    map_cmd.argsz = 1
    with expect_errno(EINVAL):
        iommufd.ioctl(u.VFIO_IOMMU_MAP_DMA, map_cmd)
    map_cmd.argsz = u.ffi.sizeof("struct vfio_iommu_type1_dma_map")
    map_cmd.flags = 1 << 31
    with expect_errno(EINVAL):
        iommufd.ioctl(u.VFIO_IOMMU_MAP_DMA, map_cmd)
    # Requires a domain to be attached.
    map_cmd.flags = u.VFIO_DMA_MAP_FLAG_READ | u.VFIO_DMA_MAP_FLAG_WRITE
    with expect_errno(ENODEV):
        iommufd.ioctl(u.VFIO_IOMMU_MAP_DMA, map_cmd)


def test_info_cmd(iommufd: Iommufd) -> None:
    info = u.ffi.new("struct vfio_iommu_type1_info *")
    info.argsz = 1
    with expect_errno(EINVAL):
        iommufd.ioctl(u.VFIO_IOMMU_GET_INFO, info)
    info.argsz = u.ffi.sizeof("struct vfio_iommu_type1_info")
    with expect_errno(ENODEV):
        iommufd.ioctl(u.VFIO_IOMMU_GET_INFO, info)


def test_set_iommu_cmd(iommufd: Iommufd) -> None:
    with expect_errno(ENODEV):
        iommufd.ioctl(u.VFIO_SET_IOMMU, u.VFIO_TYPE1v2_IOMMU)
    with expect_errno(ENODEV):
        iommufd.ioctl(u.VFIO_SET_IOMMU, u.VFIO_TYPE1_IOMMU)


def test_vfio_ioas(iommufd: Iommufd) -> None:
    cmd = new_cmd("iommu_vfio_ioas", {"op": u.IOMMU_VFIO_IOAS_GET})
    with expect_errno(ENODEV):
        iommufd.ioctl(u.IOMMU_VFIO_IOAS, cmd)
    cmd.op = u.IOMMU_VFIO_IOAS_SET
    with expect_errno(ENOENT):
        iommufd.ioctl(u.IOMMU_VFIO_IOAS, cmd)

    ioas_id = iommufd.ioas_alloc()
    cmd.ioas_id = ioas_id
    assert iommufd.ioctl(u.IOMMU_VFIO_IOAS, cmd) == 0

    cmd.op = u.IOMMU_VFIO_IOAS_GET
    assert iommufd.ioctl(u.IOMMU_VFIO_IOAS, cmd) == 0
    assert cmd.ioas_id == ioas_id

    cmd.op = u.IOMMU_VFIO_IOAS_CLEAR
    assert iommufd.ioctl(u.IOMMU_VFIO_IOAS, cmd) == 0
    cmd.op = u.IOMMU_VFIO_IOAS_GET
    with expect_errno(ENODEV):
        iommufd.ioctl(u.IOMMU_VFIO_IOAS, cmd)
