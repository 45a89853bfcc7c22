"""The selftest mock driver's vIOMMU (selftest.c, ``mock_viommu_ops``).

A ``mock_viommu`` wraps the core vIOMMU for ``IOMMU_VIOMMU_TYPE_SELFTEST``:

- with driver data (``struct iommu_viommu_selftest``) it echoes ``in_data`` into
  ``out_data`` and into the first word of two zeroed pages it publishes for mmap()
  (``out_mmap_offset`` / ``out_mmap_length``);
- it allocates nested domains tagged with itself, so that attaching one records the
  device's virtual ID (see ``mock_driver.mock_dev_switch_viommu``);
- its cache invalidation clears entries of the *device* cache[4], the device named by
  its virtual ID on this vIOMMU;
- HW queues of ``IOMMU_HW_QUEUE_TYPE_SELFTEST``: index 0 or 1, in order, each one
  depending on the one before, at a guest-physical address that must match what the
  nest parent maps.
"""

from __future__ import annotations

from errno import EEXIST, EFAULT, EINVAL, EIO, ENOMEM, EOPNOTSUPP
from typing import TYPE_CHECKING, Any

import uapi_headers as u
from backends.mock.driver import (
    iommufd_alloc_mmap,
    iommufd_destroy_mmap,
    iommufd_object_depend,
    iommufd_object_undepend,
    iommufd_viommu_find_dev,
)
from backends.mock.errors import kerr
from backends.mock.fault import VIOMMU_INV_ALLOC, VIOMMU_PAGES
from backends.mock.mm import PAGE_SIZE
from backends.mock.mock_driver import (
    MockNestedDomain,
    UserData,
    iommu_copy_struct_from_user,
    mock_domain_alloc_nested_data,
)

if TYPE_CHECKING:
    from backends.mock.iommu import IommuDomain, PagingDomain
    from backends.mock.kernel import Kernel
    from backends.mock.viommu import IommufdHwQueue, IommufdViommu

_VIOMMU_DATA = "struct iommu_viommu_selftest"
_INVALIDATE = "struct iommu_viommu_invalidate_selftest"
_INVALIDATE_SIZE = u.ffi.sizeof(_INVALIDATE)


class MockViommu:
    """``struct mock_viommu``: the driver's half of a SELFTEST vIOMMU."""

    def __init__(self, core: IommufdViommu, s2_parent: PagingDomain) -> None:
        self.core = core
        self.s2_parent = s2_parent
        self.hw_queue: list[MockHwQueue | None] = [None] * u.IOMMU_TEST_HW_QUEUE_MAX
        self.mmap_offset = 0

    @property
    def kernel(self) -> Kernel:
        """The machine the vIOMMU lives on."""
        return self.core.ictx.kernel

    # -- mock_viommu_ops ---------------------------------------------------------------
    def destroy(self) -> None:
        """mock_viommu_destroy(): withdraw the mmap region."""
        if self.mmap_offset:
            iommufd_destroy_mmap(self.kernel, self.core.ictx.mt_mmap, self.core,
                                 self.mmap_offset)

    def alloc_domain_nested(self, flags: int, user_data: UserData) -> IommuDomain:
        """mock_viommu_alloc_domain_nested(): only the PASID flag is known."""
        if flags & ~u.IOMMU_HWPT_ALLOC_PASID:
            raise kerr(EOPNOTSUPP)
        domain = mock_domain_alloc_nested_data(self.kernel, user_data)
        domain.mock_viommu = self
        return domain

    def cache_invalidate(self, data_type: int, uptr: int, entry_len: int,
                         entry_num: int) -> tuple[int, int]:
        """mock_viommu_cache_invalidate(): clear device-cache entries by virtual device
        ID; returns ``(handled entries, errno or 0)``, the entries before a failing one
        staying handled."""
        if entry_num == 0 and data_type == u.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST:
            return 0, 0
        if self.kernel.should_fail(VIOMMU_INV_ALLOC):
            # Failing before it counts anything, the driver leaves entry_num as sent.
            return entry_num, ENOMEM
        try:
            cmds = _copy_full_user_array(self.kernel, data_type, uptr, entry_len, entry_num)
        except OSError as error:
            return 0, error.errno or EINVAL
        for done, cmd in enumerate(cmds):
            if cmd.flags & ~u.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                return done, EOPNOTSUPP
            if cmd.cache_id > u.MOCK_DEV_CACHE_ID_MAX:
                return done, EINVAL
            mdev = iommufd_viommu_find_dev(self.core, int(cmd.vdev_id))
            if mdev is None:
                return done, EINVAL
            if cmd.flags & u.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                mdev.cache[:] = [0] * u.MOCK_DEV_CACHE_NUM
            else:
                mdev.cache[int(cmd.cache_id)] = 0
        return entry_num, 0

    def get_hw_queue_size(self, queue_type: int) -> bool:
        """mock_viommu_get_hw_queue_size(): only the SELFTEST queue type exists."""
        return queue_type == u.IOMMU_HW_QUEUE_TYPE_SELFTEST

    def hw_queue_init_phys(self, hw_queue: IommufdHwQueue, index: int,
                           base_addr_pa: int) -> None:
        """mock_hw_queue_init_phys(): EINVAL past the last index, EEXIST for a taken
        one, EIO without the queue before it, EFAULT if the core's physical address
        is not what the nest parent maps at the queue's IOVA."""
        if index >= u.IOMMU_TEST_HW_QUEUE_MAX:
            raise kerr(EINVAL)
        if self.hw_queue[index] is not None:
            raise kerr(EEXIST)
        prev = None
        if index:
            prev = self.hw_queue[index - 1]
            if prev is None:
                raise kerr(EIO)
        if base_addr_pa != self.s2_parent.iova_to_phys(hw_queue.base_addr):
            raise kerr(EFAULT)
        if prev is not None:
            iommufd_object_depend(hw_queue, prev.core)
        mock_queue = MockHwQueue(hw_queue, self, prev, index)
        self.hw_queue[index] = mock_queue
        hw_queue.driver_destroy = mock_queue.destroy


class MockHwQueue:
    """``struct mock_hw_queue``."""

    def __init__(self, core: IommufdHwQueue, mock_viommu: MockViommu,
                 prev: MockHwQueue | None, index: int) -> None:
        self.core = core
        self.mock_viommu = mock_viommu
        self.prev = prev
        self.index = index

    def destroy(self) -> None:
        """mock_hw_queue_destroy(): free the index, drop the dependency."""
        self.mock_viommu.hw_queue[self.index] = None
        if self.prev is not None:
            iommufd_object_undepend(self.mock_viommu.kernel, self.core, self.prev.core)


def mock_get_viommu_size(viommu_type: int) -> bool:
    """mock_get_viommu_size(): only IOMMU_VIOMMU_TYPE_SELFTEST has a driver struct."""
    return viommu_type == u.IOMMU_VIOMMU_TYPE_SELFTEST


def mock_viommu_init(viommu: IommufdViommu, parent_domain: PagingDomain,
                     user_data: UserData | None) -> MockViommu:
    """mock_viommu_init(): with driver data, publish two zeroed pages holding
    ``in_data`` for mmap and report them (and ``out_data = in_data``) back."""
    kernel = viommu.ictx.kernel
    mock = MockViommu(viommu, parent_domain)
    if user_data is not None:
        data = iommu_copy_struct_from_user(kernel.uaccess, _VIOMMU_DATA, user_data,
                                           u.IOMMU_VIOMMU_TYPE_SELFTEST, "out_data")
        if kernel.should_fail(VIOMMU_PAGES):
            raise kerr(ENOMEM)
        pages = [kernel.phys.alloc(), kernel.phys.alloc()]
        mock.mmap_offset = iommufd_alloc_mmap(kernel, viommu.ictx.mt_mmap, viommu, pages)
        try:
            pages[0].write(0, int(data.in_data).to_bytes(4, "little"))
            data.out_data = data.in_data
            data.out_mmap_length = PAGE_SIZE * 2
            data.out_mmap_offset = mock.mmap_offset
            _copy_struct_to_user(kernel, user_data, data)
        except OSError:
            iommufd_destroy_mmap(kernel, viommu.ictx.mt_mmap, viommu, mock.mmap_offset)
            raise
    return mock


def _copy_struct_to_user(kernel: Kernel, user_data: UserData, data: Any) -> None:
    """iommu_copy_struct_to_user() of a ``struct iommu_viommu_selftest``: the type and
    length were checked on the way in; a longer user struct gets its tail zeroed."""
    ksize = u.ffi.sizeof(_VIOMMU_DATA)
    length = min(user_data.len, ksize)
    kernel.uaccess.copy_to_user(user_data.uptr, bytes(u.ffi.buffer(data, length)))
    if user_data.len > ksize:
        kernel.uaccess.clear_user(user_data.uptr + ksize, user_data.len - ksize)


def _copy_full_user_array(kernel: Kernel, data_type: int, uptr: int, entry_len: int,
                          entry_num: int) -> list[Any]:
    """iommu_copy_struct_from_full_user_array() of vIOMMU invalidation entries: the
    array type must match (EINVAL); entries of another length are copied one by one
    as copy_struct_from_user() does (zero-extended, E2BIG on a non-zero tail)."""
    if data_type != u.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST or not entry_num:
        raise kerr(EINVAL)
    uaccess = kernel.uaccess
    cmds = []
    if entry_len == _INVALIDATE_SIZE:
        raw = bytearray(uaccess.copy_from_user(uptr, entry_num * entry_len))
        for i in range(entry_num):
            cmds.append(u.ffi.from_buffer(
                f"{_INVALIDATE} *", raw[i * entry_len:(i + 1) * entry_len]))
        return cmds
    for i in range(entry_num):
        cmd = u.ffi.new(f"{_INVALIDATE} *")
        uaccess.copy_struct_from_user(cmd, _INVALIDATE_SIZE, uptr + entry_len * i, entry_len)
        cmds.append(cmd)
    return cmds


__all__ = ["MockNestedDomain", "MockViommu", "mock_get_viommu_size", "mock_viommu_init"]
