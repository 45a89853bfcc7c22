"""IOMMU_TEST_CMD: the selftest ops of CONFIG_IOMMUFD_TEST (selftest.c).

The ops drive the mock driver and check the core from the inside: MOCK_DOMAIN creates a
mock device (a selftest object) bound and attached to an IOAS or HWPT; MD_CHECK_MAP and
MD_CHECK_REFS compare the mock domain and the page pin counts with what GUP finds now;
CREATE_ACCESS returns an fd for an emulated-device access whose items (ACCESS_PAGES)
are unpinned by the unmap callback; ACCESS_RW copies through it.
"""

from __future__ import annotations

from collections.abc import Callable
from errno import EBADE, EBADFD, EINVAL, EIO, ENOENT, ENOMEM, EOPNOTSUPP, EOVERFLOW
from typing import TYPE_CHECKING, Any, cast

import uapi_headers as u
from backends.mock import access as acc
from backends.mock import dmabuf, domain_dirty, eventq, mock_driver
from backends.mock.device import (
    IommufdDevice,
    iommufd_device_bind,
    iommufd_device_unbind,
    iommufd_get_device,
)
from backends.mock.device_attach import (
    iommufd_device_attach,
    iommufd_device_detach,
    iommufd_device_replace,
)
from backends.mock.driver import iommufd_viommu_report_event
from backends.mock.errors import kerr
from backends.mock.fault import ACCESS_ITEM_ALLOC, STACCESS_ALLOC
from backends.mock.files import File
from backends.mock.interval_tree import U64_MAX
from backends.mock.iommu import IOMMU_NO_PASID, DomainType, PagingDomain
from backends.mock.iommu_group import iommu_attach_handle_get
from backends.mock.mm import PAGE_SIZE
from backends.mock.objects import IommufdObject, ObjType
from backends.mock.pages import IOMMUFD_ACCESS_RW_WRITE
from backends.mock.private import iommufd_get_ioas

if TYPE_CHECKING:
    from backends.mock.hw_pagetable import HwptPaging
    from backends.mock.mock_driver import MockDev
    from backends.mock.private import IommufdCtx, Ucmd

ACCESS_LIMIT = 16 * 1024 * 1024
"""ACCESS_PAGES / ACCESS_RW refuse more (ENOMEM), to keep kvzalloc() quiet."""


class SelftestObj(IommufdObject):
    """``struct selftest_obj`` (TYPE_IDEV): a mock device bound to the context."""

    obj_type = ObjType.SELFTEST

    def __init__(self, ictx: IommufdCtx) -> None:
        super().__init__()
        self.ictx = ictx
        self.idev: IommufdDevice | None = None
        self.mock_dev: MockDev | None = None

    def destroy(self) -> None:
        """iommufd_selftest_destroy(): detach, unbind, unplug the mock device."""
        assert self.idev is not None and self.mock_dev is not None
        iommufd_device_detach(self.idev, IOMMU_NO_PASID)
        iommufd_device_unbind(self.idev)
        self.mock_dev.destroy()


class AccessItem:
    """``struct selftest_access_item``: one ACCESS_PAGES pin."""

    __slots__ = ("id", "iova", "length")

    def __init__(self, iova: int, length: int, item_id: int) -> None:
        self.iova = iova
        self.length = length
        self.id = item_id


class SelftestAccess(File):
    """``struct selftest_access`` behind an ``[iommufd_test_staccess]`` fd."""

    name = "iommufd_test_staccess"

    def __init__(self) -> None:
        super().__init__()
        self.access: acc.IommufdAccess | None = None
        self.items: list[AccessItem] = []
        self.next_id = 0

    def unmap(self, iova: int, length: int) -> None:
        """iommufd_test_access_unmap(): unpin every item overlapping the range."""
        last = iova + length - 1
        for item in list(self.items):
            if iova > item.iova + item.length - 1 or last < item.iova:
                continue
            self.items.remove(item)
            assert self.access is not None
            acc.iommufd_access_unpin_pages(self.access, item.iova, item.length)

    def release(self) -> None:
        """iommufd_test_staccess_release(): unpin everything, destroy the access."""
        if self.access is not None:
            self.unmap(0, U64_MAX)
            acc.iommufd_access_destroy(self.access)
            self.access = None


def _access_unmap(data: Any, iova: int, length: int) -> None:
    cast(SelftestAccess, data).unmap(iova, length)


SELFTEST_ACCESS_OPS_PIN = acc.AccessOps(needs_pin_pages=True, unmap=_access_unmap)
SELFTEST_ACCESS_OPS = acc.AccessOps(needs_pin_pages=False, unmap=_access_unmap)


def _access_get(ictx: IommufdCtx, fd: int) -> SelftestAccess:
    """iommufd_access_get(): the staccess behind ``fd``, with a reference (EBADFD)."""
    file = ictx.kernel.files.fget(fd)
    if file is None:
        raise kerr(EBADFD)
    if not isinstance(file, SelftestAccess):
        file.put()
        raise kerr(EBADFD)
    return file


def _syz_conv_iova(ictx: IommufdCtx, ioas: Any, iova: int) -> int:
    """__iommufd_test_syz_conv_iova(): ``{u32 nth_area; u32 offset}`` -> an IOVA."""
    nth = iova & 0xFFFFFFFF
    offset = iova >> 32
    for area in ioas.iopt.areas:
        if nth == 0:
            return int(area.start + offset) & U64_MAX  # an unsigned long sum
        nth -= 1
    return 0


def iommufd_test_syz_conv_iova_id(ucmd: Ucmd, ioas_id: int, cmd: Any, field: str) -> None:
    """iommufd_test_syz_conv_iova_id(): IOAS_COPY in syzkaller mode (flag bit 16)."""
    if not cmd.flags & u.MOCK_FLAGS_ACCESS_SYZ:
        return
    cmd.flags &= ~u.MOCK_FLAGS_ACCESS_SYZ
    try:
        ioas = ucmd.ictx.get_object(ioas_id, ObjType.IOAS)
    except OSError:
        return
    try:
        setattr(cmd, field, _syz_conv_iova(ucmd.ictx, ioas, int(getattr(cmd, field))))
    finally:
        ucmd.ictx.put_object(ioas)


# -- the ops ------------------------------------------------------------------

def _test_add_reserved(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_ADD_RESERVED: iopt_reserve_iova() on IOAS ``id``."""
    cmd = ucmd.cmd
    start, length = int(cmd.add_reserved.start), int(cmd.add_reserved.length)
    if not length:
        raise kerr(EINVAL)
    last = start + length - 1
    if last > U64_MAX:
        raise kerr(EOVERFLOW)
    ictx = ucmd.ictx
    ioas = iommufd_get_ioas(ictx, int(cmd.id))
    try:
        ioas.iopt.reserve_iova(start, last, None)
    finally:
        ictx.put_object(ioas)
    return 0


def _test_mock_domain(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS): a mock device bound and attached to ``id``."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    sobj = ictx.object_alloc(SelftestObj(ictx))
    dev_flags = (int(cmd.mock_domain_flags.dev_flags)
                 if cmd.op == u.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS else 0)
    try:
        mdev = mock_driver.mock_dev_create(ictx.kernel, dev_flags)
        try:
            idev = iommufd_device_bind(ictx, mdev)
            try:
                pt_id = iommufd_device_attach(idev, IOMMU_NO_PASID, int(cmd.id))
                sobj.idev = idev
                sobj.mock_dev = mdev
                cmd.mock_domain.out_hwpt_id = pt_id
                cmd.mock_domain.out_stdev_id = sobj.id
                cmd.mock_domain.out_idev_id = idev.id
                try:
                    ucmd.respond(u.ffi.sizeof(cmd[0]))
                except OSError:
                    iommufd_device_detach(idev, IOMMU_NO_PASID)
                    raise
            except OSError:
                iommufd_device_unbind(idev)
                raise
        except OSError:
            mdev.destroy()
            raise
    except OSError:
        ictx.object_abort(sobj)
        raise
    ictx.object_finalize(sobj)
    return 0


def _get_selftest_obj(ictx: IommufdCtx, obj_id: int) -> SelftestObj:
    """iommufd_test_get_selftest_obj()."""
    return cast(SelftestObj, ictx.get_object(obj_id, ObjType.SELFTEST))


def _test_mock_domain_replace(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: iommufd_device_replace() of stdev ``id``."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    sobj = _get_selftest_obj(ictx, int(cmd.id))
    try:
        assert sobj.idev is not None
        cmd.mock_domain_replace.pt_id = iommufd_device_replace(
            sobj.idev, IOMMU_NO_PASID, int(cmd.mock_domain_replace.pt_id))
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    finally:
        ictx.put_object(sobj)
    return 0


def _get_md_pagetable(ictx: IommufdCtx, hwpt_id: int) -> tuple[HwptPaging, PagingDomain]:
    """get_md_pagetable(): a paging HWPT whose domain is a mock domain (else EINVAL)."""
    hwpt = cast("HwptPaging", ictx.get_object(hwpt_id, ObjType.HWPT_PAGING))
    domain = hwpt.domain
    if not isinstance(domain, PagingDomain) or domain.type != DomainType.UNMANAGED or \
            not isinstance(domain.owner, mock_driver.MockIommu):
        ictx.put_object(hwpt)
        raise kerr(EINVAL)
    return hwpt, domain


def _test_md_check_map(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_MD_CHECK_MAP: each mock page under ``iova`` maps the PFN GUP finds
    at ``uptr`` now (EINVAL on a mismatch or misalignment)."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    hwpt, domain = _get_md_pagetable(ictx, int(cmd.id))
    try:
        iova = int(cmd.check_map.iova)
        length = int(cmd.check_map.length)
        uptr = int(cmd.check_map.uptr)
        page_size = domain.min_pgsize
        if iova % page_size or length % page_size or uptr % page_size or \
                uptr + length > U64_MAX:
            raise kerr(EINVAL)
        mm = ictx.kernel.mm
        cur_va = -1
        pfn = 0
        while length:
            va = uptr & ~(PAGE_SIZE - 1)
            if va != cur_va:
                pfn = mm.get_user_pages(va, 1)[0].pfn
                cur_va = va
            if domain.iova_to_phys(iova) != pfn * PAGE_SIZE + uptr % PAGE_SIZE:
                raise kerr(EINVAL)
            iova += page_size
            uptr += page_size
            length -= page_size
    finally:
        ictx.put_object(hwpt)
    return 0


def _test_md_check_refs(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_MD_CHECK_REFS: every non-compound page has ``refs`` pins (EIO)."""
    cmd = ucmd.cmd
    length = int(cmd.check_refs.length)
    uptr = int(cmd.check_refs.uptr)
    refs = int(cmd.check_refs.refs)
    if length % PAGE_SIZE or uptr % PAGE_SIZE or uptr + length > U64_MAX:
        raise kerr(EINVAL)
    mm = ucmd.ictx.kernel.mm
    try:
        # The whole range in one walk; the kernel's page-by-page loop only decides
        # which error comes first, so it runs when some page faults.
        pages = mm.get_user_pages(uptr, length // PAGE_SIZE)
    except OSError:
        pages = None
    if pages is not None:
        if any(not page.compound and page.pins != refs for page in pages):
            raise kerr(EIO)
        return 0
    while length:
        page = mm.get_user_pages(uptr, 1)[0]
        if not page.compound and page.pins != refs:
            raise kerr(EIO)
        uptr += PAGE_SIZE
        length -= PAGE_SIZE
    return 0


def _test_md_check_iotlb(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_MD_CHECK_IOTLB: entry ``id`` of a nested mock domain's IOTLB holds
    ``iotlb`` (EINVAL otherwise, or for an ``id`` past the end)."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    hwpt = ictx.get_object(int(cmd.id), ObjType.HWPT_NESTED)
    try:
        domain = getattr(hwpt, "domain", None)
        if not isinstance(domain, mock_driver.MockNestedDomain):
            raise kerr(EINVAL)
        iotlb_id = int(cmd.check_iotlb.id)
        if iotlb_id > u.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX or \
                domain.iotlb[iotlb_id] != cmd.check_iotlb.iotlb:
            raise kerr(EINVAL)
    finally:
        ictx.put_object(hwpt)
    return 0


def _test_dev_check_cache(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_DEV_CHECK_CACHE: ``mdev->cache[id] == cache`` (EINVAL)."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    idev = iommufd_get_device(ictx, int(cmd.id))
    try:
        cache_id = int(cmd.check_dev_cache.id)
        if cache_id > u.MOCK_DEV_CACHE_ID_MAX or \
                idev.dev.cache[cache_id] != cmd.check_dev_cache.cache:
            raise kerr(EINVAL)
    finally:
        ictx.put_object(idev)
    return 0


def _test_create_access(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_CREATE_ACCESS: an access on IOAS ``id``, returned as an fd."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    kernel = ictx.kernel
    flags = int(cmd.create_access.flags)
    if flags & ~u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES:
        raise kerr(EOPNOTSUPP)
    if kernel.should_fail(STACCESS_ALLOC):
        raise kerr(ENOMEM)
    staccess = SelftestAccess()
    fdno = kernel.files.get_unused_fd()
    try:
        ops = (SELFTEST_ACCESS_OPS_PIN if flags & u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES
               else SELFTEST_ACCESS_OPS)
        access = acc.iommufd_access_create(ictx, ops, staccess)
        try:
            acc.iommufd_access_attach(access, int(cmd.id))
            cmd.create_access.out_access_fd = fdno
            ucmd.respond(u.ffi.sizeof(cmd[0]))
        except OSError:
            acc.iommufd_access_destroy(access)
            raise
    except OSError:
        kernel.files.put_unused_fd(fdno)
        staccess.put()
        raise
    staccess.access = access
    kernel.files.fd_install(fdno, staccess)
    return 0


def _test_access_replace_ioas(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: iommufd_access_replace()."""
    cmd = ucmd.cmd
    staccess = _access_get(ucmd.ictx, int(cmd.id))
    try:
        assert staccess.access is not None
        acc.iommufd_access_replace(staccess.access, int(cmd.access_replace_ioas.ioas_id))
    finally:
        staccess.put()
    return 0


def _check_pages(ictx: IommufdCtx, uptr: int, pages: list[Any]) -> None:
    """iommufd_test_check_pages(): the pinned pages are the pages at ``uptr`` (EBADE)."""
    mm = ictx.kernel.mm
    for i, page in enumerate(pages):
        # GUP-fast looks at the page holding the address, aligned or not.
        if mm.get_user_pages_fast((uptr + i * PAGE_SIZE) & U64_MAX, 1)[0] is not page:
            raise kerr(EBADE)


def _test_access_pages(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_ACCESS_PAGES: pin through an access (NEEDS_PIN_PAGES only) and
    record the pin as an item."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    iova = int(cmd.access_pages.iova)
    length = int(cmd.access_pages.length)
    uptr = int(cmd.access_pages.uptr)
    flags = int(cmd.access_pages.flags)
    if length > ACCESS_LIMIT:
        raise kerr(ENOMEM)
    if flags & ~(u.MOCK_FLAGS_ACCESS_WRITE | u.MOCK_FLAGS_ACCESS_SYZ):
        raise kerr(EOPNOTSUPP)
    staccess = _access_get(ictx, int(cmd.id))
    try:
        access = staccess.access
        assert access is not None
        if access.ops is not SELFTEST_ACCESS_OPS_PIN:
            raise kerr(EOPNOTSUPP)
        if flags & u.MOCK_FLAGS_ACCESS_SYZ:
            iova = _syz_conv_iova(ictx, access.ioas, iova) if access.ioas else 0
        pages = acc.iommufd_access_pin_pages(access, iova, length,
                                             flags & u.MOCK_FLAGS_ACCESS_WRITE)
        try:
            if uptr:
                _check_pages(ictx, uptr - (iova - (iova & ~(PAGE_SIZE - 1))), pages)
            if ictx.kernel.should_fail(ACCESS_ITEM_ALLOC):
                raise kerr(ENOMEM)
            item = AccessItem(iova, length, staccess.next_id)
            staccess.next_id += 1
            staccess.items.append(item)
            cmd.access_pages.out_access_pages_id = item.id
            try:
                ucmd.respond(u.ffi.sizeof(cmd[0]))
            except OSError:
                staccess.items.remove(item)
                raise
        except OSError:
            acc.iommufd_access_unpin_pages(access, iova, length)
            raise
    finally:
        staccess.put()
    return 0


_ACCESS_RW_FLAGS = u.MOCK_ACCESS_RW_WRITE | u.MOCK_ACCESS_RW_SLOW_PATH | u.MOCK_FLAGS_ACCESS_SYZ


def _test_access_rw(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_ACCESS_RW: iommufd_access_rw() between ``uptr`` and the IOAS."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    rw = cmd.access_rw
    # (cffi reads integer fields as ints: this runs a quarter of a million times a suite)
    iova = rw.iova
    length = rw.length
    uptr = rw.uptr
    flags = rw.flags
    if length > ACCESS_LIMIT:
        raise kerr(ENOMEM)
    if flags & ~_ACCESS_RW_FLAGS:
        raise kerr(EOPNOTSUPP)
    staccess = _access_get(ictx, cmd.id)
    try:
        access = staccess.access
        assert access is not None
        uaccess = ictx.kernel.uaccess
        write = bool(flags & IOMMUFD_ACCESS_RW_WRITE)
        buf = bytearray(uaccess.copy_from_user(uptr, length)) if write else bytearray(length)
        if flags & u.MOCK_FLAGS_ACCESS_SYZ:
            iova = _syz_conv_iova(ictx, access.ioas, iova) if access.ioas else 0
        acc.iommufd_access_rw(access, iova, buf, length, flags)
        if not write:
            uaccess.copy_to_user(uptr, buf)
    finally:
        staccess.put()
    return 0


def _test_destroy_access_pages(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: unpin one item (ENOENT if unknown)."""
    cmd = ucmd.cmd
    staccess = _access_get(ucmd.ictx, int(cmd.id))
    try:
        item_id = int(cmd.destroy_access_pages.access_pages_id)
        for item in staccess.items:
            if item.id == item_id:
                staccess.items.remove(item)
                assert staccess.access is not None
                acc.iommufd_access_unpin_pages(staccess.access, item.iova, item.length)
                return 0
        raise kerr(ENOENT)
    finally:
        staccess.put()


def _test_set_temp_memory_limit(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: at least one batch element (EINVAL)."""
    limit = int(ucmd.cmd.memory_limit.limit)
    if limit < 8 + 4:
        raise kerr(EINVAL)
    ucmd.ictx.kernel.test_memory_limit = limit
    return 0


def _test_dirty(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_DIRTY: argument checks, then backends.mock.domain_dirty."""
    cmd = ucmd.cmd
    d = cmd.dirty
    page_size, length, iova = int(d.page_size), int(d.length), int(d.iova)
    if not page_size or not length or iova % page_size or length % page_size or not d.uptr:
        raise kerr(EINVAL)
    if length // page_size > domain_dirty.DIRTY_MAX_BITS:
        raise kerr(EOVERFLOW)
    ictx = ucmd.ictx
    hwpt, domain = _get_md_pagetable(ictx, int(cmd.id))
    try:
        d.out_nr_dirty = domain_dirty.mock_test_dirty(ictx.kernel, domain, iova, length,
                                                      page_size, int(d.uptr))
        ucmd.respond(u.ffi.sizeof(cmd[0]))
    finally:
        ictx.put_object(hwpt)
    return 0


def _test_trigger_iopf(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_TRIGGER_IOPF: report a last-page request (PASID_VALID unless the
    PASID is 0) as the device's IOMMU would; an undeliverable one is dropped."""
    cmd = ucmd.cmd.trigger_iopf
    ictx = ucmd.ictx
    idev = iommufd_get_device(ictx, int(cmd.dev_id))
    try:
        flags = eventq.IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE
        if cmd.pasid != IOMMU_NO_PASID:
            flags |= eventq.IOMMU_FAULT_PAGE_REQUEST_PASID_VALID
        eventq.iommu_report_device_fault(idev, flags, int(cmd.pasid), int(cmd.grpid),
                                         int(cmd.perm), int(cmd.addr))
    finally:
        ictx.put_object(idev)
    return 0


def _test_trigger_vevent(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_TRIGGER_VEVENT: report ``{virt_id}`` of the device to the SELFTEST
    vEVENTQ of its vIOMMU (ENOENT unless attached through a vIOMMU with a virtual ID)."""
    ictx = ucmd.ictx
    idev = iommufd_get_device(ictx, int(ucmd.cmd.trigger_vevent.dev_id))
    try:
        mdev = idev.dev
        if mdev.viommu is None or not mdev.vdev_id:
            raise kerr(ENOENT)
        iommufd_viommu_report_event(mdev.viommu.core, u.IOMMU_VEVENTQ_TYPE_SELFTEST,
                                    int(mdev.vdev_id).to_bytes(4, "little"))
    finally:
        ictx.put_object(idev)
    return 0


def _test_pasid_op(ucmd: Ucmd) -> int:
    """PASID_ATTACH / REPLACE / DETACH / CHECK_HWPT through the device code."""
    cmd = ucmd.cmd
    ictx = ucmd.ictx
    sobj = _get_selftest_obj(ictx, int(cmd.id))
    try:
        idev = sobj.idev
        assert idev is not None and idev.igroup is not None
        op = cmd.op
        if op == u.IOMMU_TEST_OP_PASID_ATTACH:
            pasid = int(cmd.pasid_attach.pasid)
            cmd.pasid_attach.pt_id = iommufd_device_attach(idev, pasid,
                                                           int(cmd.pasid_attach.pt_id))
            try:
                ucmd.respond(u.ffi.sizeof(cmd[0]))
            except OSError:
                iommufd_device_detach(idev, pasid)
                raise
        elif op == u.IOMMU_TEST_OP_PASID_REPLACE:
            cmd.pasid_replace.pt_id = iommufd_device_replace(
                idev, int(cmd.pasid_replace.pasid), int(cmd.pasid_replace.pt_id))
            ucmd.respond(u.ffi.sizeof(cmd[0]))
        elif op == u.IOMMU_TEST_OP_PASID_DETACH:
            iommufd_device_detach(idev, int(cmd.pasid_detach.pasid))
        else:
            # What the IOMMU core has published for the PASID, not iommufd's view.
            assert sobj.mock_dev is not None
            handle = iommu_attach_handle_get(sobj.mock_dev.group,
                                             int(cmd.pasid_check.pasid))
            attached = handle.domain if handle is not None else None
            hwpt_id = int(cmd.pasid_check.hwpt_id)
            if not hwpt_id:
                if attached is not None:
                    raise kerr(EINVAL)
                return 0
            hwpt = ictx.get_object(hwpt_id, ObjType.ANY)
            try:
                if hwpt.obj_type not in (ObjType.HWPT_NESTED, ObjType.HWPT_PAGING) or \
                        attached is not getattr(hwpt, "domain", None):
                    raise kerr(EINVAL)
            finally:
                ictx.put_object(hwpt)
    finally:
        ictx.put_object(sobj)
    return 0


def _test_dmabuf_get(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_DMABUF_GET: returns the new dma-buf's fd."""
    get = ucmd.cmd.dmabuf_get
    return dmabuf.dmabuf_get(ucmd, int(get.open_flags), int(get.length))


def _test_dmabuf_revoke(ucmd: Ucmd) -> int:
    """IOMMU_TEST_OP_DMABUF_REVOKE."""
    revoke = ucmd.cmd.dmabuf_revoke
    return dmabuf.dmabuf_revoke(ucmd, int(revoke.dmabuf_fd), bool(revoke.revoked))


_OPS: dict[int, Callable[[Ucmd], int]] = {
    u.IOMMU_TEST_OP_ADD_RESERVED: _test_add_reserved,
    u.IOMMU_TEST_OP_MOCK_DOMAIN: _test_mock_domain,
    u.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: _test_mock_domain,
    u.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: _test_mock_domain_replace,
    u.IOMMU_TEST_OP_MD_CHECK_MAP: _test_md_check_map,
    u.IOMMU_TEST_OP_MD_CHECK_REFS: _test_md_check_refs,
    u.IOMMU_TEST_OP_MD_CHECK_IOTLB: _test_md_check_iotlb,
    u.IOMMU_TEST_OP_DEV_CHECK_CACHE: _test_dev_check_cache,
    u.IOMMU_TEST_OP_CREATE_ACCESS: _test_create_access,
    u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: _test_access_replace_ioas,
    u.IOMMU_TEST_OP_ACCESS_PAGES: _test_access_pages,
    u.IOMMU_TEST_OP_ACCESS_RW: _test_access_rw,
    u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: _test_destroy_access_pages,
    u.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: _test_set_temp_memory_limit,
    u.IOMMU_TEST_OP_DIRTY: _test_dirty,
    u.IOMMU_TEST_OP_TRIGGER_IOPF: _test_trigger_iopf,
    u.IOMMU_TEST_OP_TRIGGER_VEVENT: _test_trigger_vevent,
    u.IOMMU_TEST_OP_PASID_ATTACH: _test_pasid_op,
    u.IOMMU_TEST_OP_PASID_REPLACE: _test_pasid_op,
    u.IOMMU_TEST_OP_PASID_DETACH: _test_pasid_op,
    u.IOMMU_TEST_OP_PASID_CHECK_HWPT: _test_pasid_op,
    u.IOMMU_TEST_OP_DMABUF_GET: _test_dmabuf_get,
    u.IOMMU_TEST_OP_DMABUF_REVOKE: _test_dmabuf_revoke,
}


def iommufd_test(ucmd: Ucmd) -> int:
    """IOMMU_TEST_CMD: dispatch on ``op``; an unknown op is EOPNOTSUPP."""
    handler = _OPS.get(ucmd.cmd.op)
    if handler is None:
        raise kerr(EOPNOTSUPP)
    return handler(ucmd)
