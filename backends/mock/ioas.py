"""The IOAS object and its ioctls (ioas.c).

IOAS_ALLOC, IOVA_RANGES, ALLOW_IOVAS, MAP, MAP_FILE, COPY, UNMAP, CHANGE_PROCESS and the
two IOMMU_OPTIONs. Each decodes the command, looks the IOAS up (ENOENT), and calls the
io_pagetable; the checks before the lookup come first, in the kernel's order.
"""

from __future__ import annotations

from errno import (
    EBUSY,
    EINVAL,
    EMSGSIZE,
    ENOENT,
    ENOMEM,
    EOPNOTSUPP,
    EOVERFLOW,
    EPERM,
)
from typing import TYPE_CHECKING, Any

import uapi_headers as u
from backends.mock.errors import kerr
from backends.mock.fault import ALLOWED_ALLOC
from backends.mock.interval_tree import U64_MAX, IntervalTree, Span
from backends.mock.io_pagetable import IOPT_ALLOC_IOVA, IoPagetable, free_pages_list
from backends.mock.iommu import IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE
from backends.mock.objects import IommufdObject, ObjType
from backends.mock.pages import (
    ACCOUNT_MM,
    ACCOUNT_NONE,
    ACCOUNT_USER,
    IOPT_ADDRESS_FILE,
    IoptPages,
    update_pinned,
)
from backends.mock.private import iommufd_get_ioas
from backends.mock.selftest import iommufd_test_syz_conv_iova_id

if TYPE_CHECKING:
    from backends.mock.hw_pagetable import HwptPaging
    from backends.mock.kernel import Kernel
    from backends.mock.private import IommufdCtx, Ucmd
    from backends.mock.uaccess import UserAccess

_MAP_FLAGS = (u.IOMMU_IOAS_MAP_FIXED_IOVA | u.IOMMU_IOAS_MAP_WRITEABLE
              | u.IOMMU_IOAS_MAP_READABLE)
_RW = u.IOMMU_IOAS_MAP_WRITEABLE | u.IOMMU_IOAS_MAP_READABLE
_RANGE_SIZE = u.ffi.sizeof("struct iommu_iova_range")


class IommufdIoas(IommufdObject):
    """``struct iommufd_ioas``: an IO page table and the paging HWPTs built on it."""

    obj_type = ObjType.IOAS

    def __init__(self, kernel: Kernel) -> None:
        super().__init__()
        self.iopt = IoPagetable(kernel)
        self.hwpt_list: list[HwptPaging] = []

    def destroy(self) -> None:
        """iommufd_ioas_destroy(): unmap everything, then tear the table down."""
        rc, _ = self.iopt.unmap_all()
        self.iopt.kernel.warn_on(rc not in (0, ENOENT), "iommufd_ioas_destroy: unmap")
        self.iopt.destroy_table()


def iommufd_ioas_alloc(ictx: IommufdCtx) -> IommufdIoas:
    """iommufd_ioas_alloc(): a reserved, not yet published IOAS."""
    return ictx.object_alloc(IommufdIoas(ictx.kernel))


def conv_iommu_prot(map_flags: int) -> int:
    """conv_iommu_prot(): IOMMU_CACHE always (coherency is enforced at bind)."""
    prot = IOMMU_CACHE
    if map_flags & u.IOMMU_IOAS_MAP_WRITEABLE:
        prot |= IOMMU_WRITE
    if map_flags & u.IOMMU_IOAS_MAP_READABLE:
        prot |= IOMMU_READ
    return prot


def iommufd_ioas_alloc_ioctl(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_ALLOC: flags must be 0 (EOPNOTSUPP)."""
    cmd = ucmd.cmd
    if cmd.flags:
        raise kerr(EOPNOTSUPP)
    ictx = ucmd.ictx
    ioas = iommufd_ioas_alloc(ictx)
    cmd.out_ioas_id = ioas.id
    try:
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    except OSError:
        ictx.object_abort_and_destroy(ioas)
        raise
    ictx.object_finalize(ioas)
    return 0


def iommufd_ioas_iova_ranges(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_IOVA_RANGES: the holes of the reserved ranges; EMSGSIZE with the
    needed count when the array is too small (the entries that fit are written)."""
    cmd = ucmd.cmd
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    ictx = ucmd.ictx
    ioas = iommufd_get_ioas(ictx, int(cmd.ioas_id))
    try:
        max_iovas = int(cmd.num_iovas)
        ranges = int(cmd.allowed_iovas)
        cmd.out_iova_alignment = ioas.iopt.iova_alignment
        count = 0
        for start, last in ioas.iopt.iova_ranges():
            if count < max_iovas:
                ucmd.uaccess.copy_to_user(
                    ranges + count * _RANGE_SIZE,
                    start.to_bytes(8, "little") + last.to_bytes(8, "little"))
            count += 1
        cmd.num_iovas = count
        ucmd.respond(u.ffi.sizeof(cmd[0]))
        if count > max_iovas:
            raise kerr(EMSGSIZE)
    finally:
        ictx.put_object(ioas)
    return 0


def _load_iovas(ictx: IommufdCtx, uaccess: UserAccess, ranges: int, num: int) -> list[Span]:
    """iommufd_ioas_load_iovas(): read the user's ranges; EINVAL for an empty or
    backwards range and for ranges that overlap each other."""
    tree: IntervalTree[Span] = IntervalTree()
    for i in range(num):
        raw = uaccess.copy_from_user(ranges + i * _RANGE_SIZE, _RANGE_SIZE)
        start = int.from_bytes(raw[:8], "little")
        last = int.from_bytes(raw[8:], "little")
        if start >= last:
            raise kerr(EINVAL)
        if tree.first_overlap(start, last) is not None:
            raise kerr(EINVAL)
        if ictx.kernel.should_fail(ALLOWED_ALLOC):
            raise kerr(ENOMEM)
        tree.insert(Span(start, last))
    return tree.snapshot()


def iommufd_ioas_allow_iovas(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_ALLOW_IOVAS: replace the allowed list atomically; EADDRINUSE if a
    range intersects a reserved one. ``num_iovas == 0`` clears it."""
    cmd = ucmd.cmd
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    ictx = ucmd.ictx
    ioas = iommufd_get_ioas(ictx, int(cmd.ioas_id))
    try:
        allowed = _load_iovas(ictx, ucmd.uaccess, int(cmd.allowed_iovas), int(cmd.num_iovas))
        ioas.iopt.set_allow_iova(allowed)
    finally:
        ictx.put_object(ioas)
    return 0


def _check_map_cmd(cmd: Any, reserved: int) -> None:
    # The flag, overflow and permission checks MAP and MAP_FILE share, in the kernel's order.
    if cmd.flags & ~_MAP_FLAGS or reserved:
        raise kerr(EOPNOTSUPP)
    if cmd.iova >= U64_MAX or cmd.length >= U64_MAX:
        raise kerr(EOVERFLOW)
    if not cmd.flags & _RW:
        raise kerr(EINVAL)


def iommufd_ioas_map(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_MAP: user VA at a fixed or automatically chosen IOVA."""
    cmd = ucmd.cmd
    _check_map_cmd(cmd, reserved=int(cmd.__reserved))
    ictx = ucmd.ictx
    ioas = iommufd_get_ioas(ictx, int(cmd.ioas_id))
    try:
        flags = 0 if cmd.flags & u.IOMMU_IOAS_MAP_FIXED_IOVA else IOPT_ALLOC_IOVA
        cmd.iova = ioas.iopt.map_user_pages(ictx, int(cmd.iova), int(cmd.user_va),
                                            int(cmd.length), conv_iommu_prot(cmd.flags),
                                            flags)
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    finally:
        ictx.put_object(ioas)
    return 0


def iommufd_ioas_map_file(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_MAP_FILE: a memfd range; EINVAL at pin time past the file's end."""
    cmd = ucmd.cmd
    _check_map_cmd(cmd, reserved=0)
    ictx = ucmd.ictx
    ioas = iommufd_get_ioas(ictx, int(cmd.ioas_id))
    try:
        flags = 0 if cmd.flags & u.IOMMU_IOAS_MAP_FIXED_IOVA else IOPT_ALLOC_IOVA
        cmd.iova = ioas.iopt.map_file_pages(ictx, int(cmd.iova), int(cmd.fd),
                                            int(cmd.start), int(cmd.length),
                                            conv_iommu_prot(cmd.flags), flags)
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    finally:
        ictx.put_object(ioas)
    return 0


def iommufd_ioas_copy(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_COPY: share the pages under a fully mapped source range (ENOENT if
    not) into the destination IOAS."""
    cmd = ucmd.cmd
    iommufd_test_syz_conv_iova_id(ucmd, int(cmd.src_ioas_id), cmd, "src_iova")
    if cmd.flags & ~_MAP_FLAGS:
        raise kerr(EOPNOTSUPP)
    if cmd.length >= U64_MAX or cmd.src_iova >= U64_MAX or cmd.dst_iova >= U64_MAX:
        raise kerr(EOVERFLOW)
    if not cmd.flags & _RW:
        raise kerr(EINVAL)
    ictx = ucmd.ictx
    src_ioas = iommufd_get_ioas(ictx, int(cmd.src_ioas_id))
    try:
        pages_list = src_ioas.iopt.get_pages(int(cmd.src_iova), int(cmd.length))
    finally:
        ictx.put_object(src_ioas)
    try:
        dst_ioas = iommufd_get_ioas(ictx, int(cmd.dst_ioas_id))
        try:
            flags = 0 if cmd.flags & u.IOMMU_IOAS_MAP_FIXED_IOVA else IOPT_ALLOC_IOVA
            cmd.dst_iova = dst_ioas.iopt.map_pages(pages_list, int(cmd.length),
                                                   int(cmd.dst_iova),
                                                   conv_iommu_prot(cmd.flags), flags)
            ucmd.respond(u.ffi.sizeof(cmd[0]))
        finally:
            ictx.put_object(dst_ioas)
    finally:
        free_pages_list(pages_list)
    return 0


def iommufd_ioas_unmap(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_UNMAP: whole areas inside the range; ``0/U64_MAX`` unmaps all.
    Nothing unmapped is ENOENT; the byte count goes back in ``length``."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    ioas = iommufd_get_ioas(ictx, int(cmd.ioas_id))
    try:
        if cmd.iova == 0 and cmd.length == U64_MAX:
            rc, unmapped = ioas.iopt.unmap_all()
            if rc:
                raise kerr(rc)
        else:
            if cmd.iova >= U64_MAX or cmd.length >= U64_MAX:
                raise kerr(EOVERFLOW)
            rc, unmapped = ioas.iopt.unmap_iova(int(cmd.iova), int(cmd.length))
            if rc:
                raise kerr(rc)
            if not unmapped:
                raise kerr(ENOENT)
        cmd.length = unmapped
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    finally:
        ictx.put_object(ioas)
    return 0


def iommufd_ioas_noiommu_get_pa(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_NOIOMMU_GET_PA: the test kernels build without CONFIG_IOMMUFD_NOIOMMU."""
    raise kerr(EOPNOTSUPP)


def iommufd_ioas_change_process(ucmd: Ucmd) -> int:
    """IOMMU_IOAS_CHANGE_PROCESS: every area of every IOAS must be file-backed
    (EINVAL) and fully set up (EBUSY); then the pin accounting of pages charged to
    another mm or user moves to the caller: the caller is charged first, per
    accounting mode (all or nothing), then each old owner uncharged, and the pages'
    source becomes the caller's mm, task and user."""
    cmd = ucmd.cmd
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    kernel = ucmd.ictx.kernel
    areas = [area for obj in ucmd.ictx.objects.objects()
             if isinstance(obj, IommufdIoas) and obj.users != 0
             for area in obj.iopt.areas]
    for area in areas:
        if area.pages is None:
            raise kerr(EBUSY)
        if area.pages.type != IOPT_ADDRESS_FILE:
            raise kerr(EINVAL)
    all_pages = [area.pages for area in areas if area.pages is not None]

    def need_charge_update(pages: IoptPages) -> bool:
        if pages.account_mode == ACCOUNT_NONE:
            return False
        moved_mm = pages.source_mm is not kernel.mm
        if pages.account_mode == ACCOUNT_MM:
            return moved_mm
        return moved_mm or pages.source_user is not kernel.task.user

    # Count each pages' pins once, although several areas (copies) may share them.
    all_npinned = [0, 0, 0]
    for pages in all_pages:
        if need_charge_update(pages):
            all_npinned[pages.account_mode] += pages.last_npinned
            pages.last_npinned = 0
    current = kernel.task
    charged: list[int] = []
    try:
        for mode, npinned in enumerate(all_npinned):
            if npinned:
                update_pinned(kernel, mode, current.mm, current, current.user, npinned,
                              True)
                charged.append(mode)
    except OSError:
        for mode in reversed(charged):
            update_pinned(kernel, mode, current.mm, current, current.user,
                          all_npinned[mode], False)
        for pages in all_pages:
            pages.last_npinned = pages.npinned
        raise
    for pages in all_pages:
        if need_charge_update(pages):
            try:
                pages.update_pinned(pages.npinned, False)
            except OSError:
                kernel.warn_on(True, "iommufd_ioas_change_process: uncharge")
            pages.source_mm = current.mm
            pages.source_task = current
            pages.source_user = current.user
    return 0


def iommufd_option_rlimit_mode(cmd: Any, ictx: IommufdCtx) -> None:
    """IOMMU_OPTION_RLIMIT_MODE: global; SET needs CAP_SYS_RESOURCE and an fd without
    objects; 0 selects per-user accounting, 1 the VFIO-compatible per-mm one."""
    if cmd.object_id:
        raise kerr(EOPNOTSUPP)
    if cmd.op == u.IOMMU_OPTION_OP_GET:
        cmd.val64 = 1 if ictx.account_mode == ACCOUNT_MM else 0
        return
    if cmd.op == u.IOMMU_OPTION_OP_SET:
        if not ictx.kernel.task.cap_sys_resource:
            raise kerr(EPERM)
        if len(ictx.objects):
            raise kerr(EBUSY)
        if cmd.val64 == 0:
            ictx.account_mode = ACCOUNT_USER
        elif cmd.val64 == 1:
            ictx.account_mode = ACCOUNT_MM
        else:
            raise kerr(EINVAL)
        return
    raise kerr(EOPNOTSUPP)


def iommufd_ioas_option(ucmd: Ucmd) -> None:
    """IOMMU_OPTION_HUGE_PAGES on IOAS ``object_id`` (ENOENT for 0): 1 (default) lets
    domains use large pages, 0 forces PAGE_SIZE alignment."""
    cmd = ucmd.cmd
    if cmd.__reserved:
        raise kerr(EOPNOTSUPP)
    ictx = ucmd.ictx
    ioas = iommufd_get_ioas(ictx, int(cmd.object_id))
    try:
        if cmd.option_id != u.IOMMU_OPTION_HUGE_PAGES:
            raise kerr(EOPNOTSUPP)
        if cmd.op == u.IOMMU_OPTION_OP_GET:
            cmd.val64 = 0 if ioas.iopt.disable_large_pages else 1
        elif cmd.op == u.IOMMU_OPTION_OP_SET:
            if cmd.val64 == 0:
                ioas.iopt.set_large_pages(False)
            elif cmd.val64 == 1:
                ioas.iopt.set_large_pages(True)
            else:
                raise kerr(EINVAL)
        else:
            raise kerr(EOPNOTSUPP)
    finally:
        ictx.put_object(ioas)
