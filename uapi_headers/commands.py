"""The iommufd command table: which struct each ioctl takes and the sizes the kernel accepts.

It follows the kernel's dispatch table (``iommufd_ioctl_ops`` in
drivers/iommu/iommufd/main.c): a command accepts any ``size`` from ``min_size`` (the end of
the last field of the struct as the command was first merged; later growth is optional
for userspace) upwards, and bytes past ``size`` (sizeof today) must be zero. The mock
backend dispatches on it and the ABI tests (cmd_length) iterate it.
"""

from __future__ import annotations

from dataclasses import dataclass

from uapi_headers import iommufd as _u
from uapi_headers import iommufd_test as _t
from uapi_headers._ffi import ffi


@dataclass(frozen=True)
class Command:
    """One entry of the iommufd ioctl table."""

    name: str
    """The ioctl macro, e.g. ``"IOMMU_IOAS_MAP"``."""
    nr: int
    """The ioctl nr byte (``IOMMUFD_CMD_*``; 0xa0 for IOMMU_TEST_CMD)."""
    request: int
    """The full ioctl request number (``_IO(';', nr)``)."""
    struct: str
    """The argument type as cffi knows it, e.g. ``"struct iommu_ioas_map"``."""
    last_field: str
    """The field that ended the struct when the command was introduced."""
    min_size: int
    """``offsetofend(struct, last_field)``: a smaller ``size`` is EINVAL."""
    size: int
    """``sizeof(struct)`` in this uAPI level."""


def offsetofend(struct: str, field: str) -> int:
    """The offset just past ``field`` of ``struct`` (a cffi type name)."""
    fields = dict(ffi.typeof(struct).fields)
    offset: int = ffi.offsetof(struct, field)
    end: int = offset + ffi.sizeof(fields[field].type)
    return end


def _command(name: str, request: int, struct_tag: str, last_field: str) -> Command:
    struct = f"struct {struct_tag}"
    return Command(
        name=name,
        nr=request & 0xFF,  # _IOC_NR: the low byte of the request
        request=request,
        struct=struct,
        last_field=last_field,
        min_size=offsetofend(struct, last_field),
        size=ffi.sizeof(struct),
    )


# (ioctl, struct, last field of the original struct), per main.c's table.
IOMMUFD_COMMANDS: tuple[Command, ...] = tuple(
    sorted(
        (
            _command("IOMMU_DESTROY", _u.IOMMU_DESTROY, "iommu_destroy", "id"),
            _command("IOMMU_IOAS_ALLOC", _u.IOMMU_IOAS_ALLOC, "iommu_ioas_alloc", "out_ioas_id"),
            _command(
                "IOMMU_IOAS_ALLOW_IOVAS",
                _u.IOMMU_IOAS_ALLOW_IOVAS,
                "iommu_ioas_allow_iovas",
                "allowed_iovas",
            ),
            _command("IOMMU_IOAS_COPY", _u.IOMMU_IOAS_COPY, "iommu_ioas_copy", "src_iova"),
            _command(
                "IOMMU_IOAS_IOVA_RANGES",
                _u.IOMMU_IOAS_IOVA_RANGES,
                "iommu_ioas_iova_ranges",
                "out_iova_alignment",
            ),
            _command("IOMMU_IOAS_MAP", _u.IOMMU_IOAS_MAP, "iommu_ioas_map", "iova"),
            _command("IOMMU_IOAS_UNMAP", _u.IOMMU_IOAS_UNMAP, "iommu_ioas_unmap", "length"),
            _command("IOMMU_OPTION", _u.IOMMU_OPTION, "iommu_option", "val64"),
            _command("IOMMU_VFIO_IOAS", _u.IOMMU_VFIO_IOAS, "iommu_vfio_ioas", "__reserved"),
            _command("IOMMU_HWPT_ALLOC", _u.IOMMU_HWPT_ALLOC, "iommu_hwpt_alloc", "__reserved"),
            _command("IOMMU_GET_HW_INFO", _u.IOMMU_GET_HW_INFO, "iommu_hw_info", "__reserved"),
            _command(
                "IOMMU_HWPT_SET_DIRTY_TRACKING",
                _u.IOMMU_HWPT_SET_DIRTY_TRACKING,
                "iommu_hwpt_set_dirty_tracking",
                "__reserved",
            ),
            _command(
                "IOMMU_HWPT_GET_DIRTY_BITMAP",
                _u.IOMMU_HWPT_GET_DIRTY_BITMAP,
                "iommu_hwpt_get_dirty_bitmap",
                "data",
            ),
            _command(
                "IOMMU_HWPT_INVALIDATE",
                _u.IOMMU_HWPT_INVALIDATE,
                "iommu_hwpt_invalidate",
                "__reserved",
            ),
            _command(
                "IOMMU_FAULT_QUEUE_ALLOC",
                _u.IOMMU_FAULT_QUEUE_ALLOC,
                "iommu_fault_alloc",
                "out_fault_fd",
            ),
            _command(
                "IOMMU_IOAS_MAP_FILE", _u.IOMMU_IOAS_MAP_FILE, "iommu_ioas_map_file", "iova"
            ),
            _command(
                "IOMMU_VIOMMU_ALLOC",
                _u.IOMMU_VIOMMU_ALLOC,
                "iommu_viommu_alloc",
                "out_viommu_id",
            ),
            _command(
                "IOMMU_VDEVICE_ALLOC", _u.IOMMU_VDEVICE_ALLOC, "iommu_vdevice_alloc", "virt_id"
            ),
            _command(
                "IOMMU_IOAS_CHANGE_PROCESS",
                _u.IOMMU_IOAS_CHANGE_PROCESS,
                "iommu_ioas_change_process",
                "__reserved",
            ),
            _command(
                "IOMMU_VEVENTQ_ALLOC",
                _u.IOMMU_VEVENTQ_ALLOC,
                "iommu_veventq_alloc",
                "out_veventq_fd",
            ),
            _command(
                "IOMMU_HW_QUEUE_ALLOC", _u.IOMMU_HW_QUEUE_ALLOC, "iommu_hw_queue_alloc", "length"
            ),
            _command(
                "IOMMU_IOAS_NOIOMMU_GET_PA",
                _u.IOMMU_IOAS_NOIOMMU_GET_PA,
                "iommu_ioas_noiommu_get_pa",
                "out_phys",
            ),
            # Only in kernels built with CONFIG_IOMMUFD_TEST.
            _command("IOMMU_TEST_CMD", _t.IOMMU_TEST_CMD, "iommu_test_cmd", "last"),
        ),
        key=lambda command: command.nr,
    )
)
"""Every iommufd command of Linux 7.3.4 (nr 0x80..0x95) plus IOMMU_TEST_CMD (0xa0), by nr."""

_BY_NR: dict[int, Command] = {command.nr: command for command in IOMMUFD_COMMANDS}
_BY_REQUEST: dict[int, Command] = {command.request: command for command in IOMMUFD_COMMANDS}
_BY_NAME: dict[str, Command] = {command.name: command for command in IOMMUFD_COMMANDS}


def command_by_nr(nr: int) -> Command | None:
    """The command with ioctl nr ``nr``, or None (the kernel answers ENOTTY then)."""
    return _BY_NR.get(nr)


def command_by_request(request: int) -> Command | None:
    """The command whose full request number is ``request``, or None if it is not iommufd's."""
    return _BY_REQUEST.get(request)


def command_by_name(name: str) -> Command:
    """The command named ``name`` (e.g. ``"IOMMU_IOAS_MAP"``); KeyError if unknown."""
    return _BY_NAME[name]
