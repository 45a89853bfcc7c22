"""What the iommufd core offers IOMMU drivers for their vIOMMUs (driver.c).

- object dependencies (``iommufd_hw_queue_depend``): the dependent object holds a
  ``users`` reference on the one it needs, so the latter cannot be destroyed first;
- mmap regions (``iommufd_viommu_alloc_mmap``): a driver publishes physical pages at an
  offset of the iommufd fd; ``mmap()`` of exactly that offset and length maps them, and
  the mapping holds a ``users`` reference on the owning object until it is unmapped;
- lookups in a vIOMMU's virtual-device-ID map, and event reports to its vEVENTQs.
"""

from __future__ import annotations

from errno import EINVAL, ENOENT, ENOMEM, ENXIO, EOPNOTSUPP
from typing import TYPE_CHECKING

from backends.mock.errors import kerr
from backends.mock.eventq import iommufd_viommu_find_veventq
from backends.mock.fault import MMAP_ALLOC
from backends.mock.mm import PAGE_SIZE, MemObject, PhysMem, PhysPage
from backends.mock.objects import IommufdObject

if TYPE_CHECKING:
    from backends.mock.files import File
    from backends.mock.kernel import Kernel
    from backends.mock.mock_driver import MockDev
    from backends.mock.viommu import IommufdViommu

ULONG_MAX = (1 << 64) - 1


# -- object dependencies ------------------------------------------------------------

def iommufd_object_depend(dependent: IommufdObject, depended: IommufdObject) -> None:
    """_iommufd_object_depend(): only between two objects of one type, never itself."""
    if dependent is depended or dependent.obj_type != depended.obj_type:
        raise kerr(EINVAL)
    depended.users += 1


def iommufd_object_undepend(kernel: Kernel, dependent: IommufdObject,
                            depended: IommufdObject) -> None:
    """_iommufd_object_undepend()."""
    if kernel.warn_on(dependent is depended or dependent.obj_type != depended.obj_type,
                      "iommufd_object_undepend: not a dependency"):
        return
    depended.users -= 1


# -- mmap regions -------------------------------------------------------------------

class IommufdMmap:
    """``struct iommufd_mmap``: physical pages an object lets user space map."""

    def __init__(self, owner: IommufdObject, pages: list[PhysPage], start: int) -> None:
        self.owner = owner
        self.pages = pages
        self.start = start

    @property
    def length(self) -> int:
        """The region's length in bytes."""
        return len(self.pages) * PAGE_SIZE


class MmapTree:
    """``ictx->mt_mmap``: the regions by offset; the first page is never handed out,
    so an offset of 0 is never valid."""

    def __init__(self) -> None:
        self.regions: dict[int, IommufdMmap] = {}

    def alloc(self, owner: IommufdObject, pages: list[PhysPage]) -> int:
        """mtree_alloc_range(): the lowest free range of the length from PAGE_SIZE."""
        length = len(pages) * PAGE_SIZE
        start = PAGE_SIZE
        for region in sorted(self.regions.values(), key=lambda r: r.start):
            if region.start >= start + length:
                break
            start = max(start, region.start + region.length)
        self.regions[start] = IommufdMmap(owner, pages, start)
        return start

    def load(self, offset: int) -> IommufdMmap | None:
        """mtree_load(): the region containing ``offset``."""
        for region in self.regions.values():
            if region.start <= offset < region.start + region.length:
                return region
        return None

    def erase(self, offset: int) -> IommufdMmap | None:
        """mtree_erase()."""
        return self.regions.pop(offset, None)


def iommufd_alloc_mmap(kernel: Kernel, tree: MmapTree, owner: IommufdObject,
                       pages: list[PhysPage]) -> int:
    """_iommufd_alloc_mmap(): publish ``pages`` (page aligned, not empty); returns the
    offset user space passes to mmap()."""
    if not pages:
        raise kerr(EINVAL)
    if kernel.should_fail(MMAP_ALLOC):
        raise kerr(ENOMEM)
    return tree.alloc(owner, pages)


def iommufd_destroy_mmap(kernel: Kernel, tree: MmapTree, owner: IommufdObject,
                         offset: int) -> None:
    """_iommufd_destroy_mmap()."""
    immap = tree.erase(offset)
    kernel.warn_on(immap is None or immap.owner is not owner,
                   "iommufd_destroy_mmap: not the owner's region")


class MmapObject(MemObject):
    """What an iommufd mmap() maps: the region's pages as an ``io_remap_pfn_range``
    mapping (GUP refuses it). Each VMA on it holds a ``users`` reference on the owner
    (``iommufd_vma_ops``) and one on the iommufd file (``vma->vm_file``)."""

    pfnmap = True

    def __init__(self, phys: PhysMem, immap: IommufdMmap, file: File) -> None:
        super().__init__(phys)
        self.immap = immap
        self.file = file
        self.pages = dict(enumerate(immap.pages))

    def in_bounds(self, index: int) -> bool:
        """Only the region's pages exist."""
        return index in self.pages

    def page(self, index: int) -> PhysPage:
        """The region's page (nothing is allocated on a fault)."""
        page = self.pages.get(index)
        if page is None:
            raise kerr(ENXIO)
        return page

    def vma_open(self) -> None:
        """iommufd_fops_vma_open() (a split VMA is one more mapping)."""
        self.immap.owner.users += 1
        self.file.get()

    def vma_close(self) -> None:
        """iommufd_fops_vma_close()."""
        self.immap.owner.users -= 1
        self.file.put()


# -- the vIOMMU's virtual device IDs and its events ------------------------------------

def iommufd_viommu_find_dev(viommu: IommufdViommu, vdev_id: int) -> MockDev | None:
    """iommufd_viommu_find_dev(): the device behind virtual ID ``vdev_id`` (a slot
    reserved by a VDEVICE_ALLOC in flight reads as empty)."""
    vdev = viommu.vdevs.get(vdev_id)
    return None if vdev is None else vdev.idev.dev


def iommufd_viommu_get_vdev_id(viommu: IommufdViommu, dev: MockDev) -> int:
    """iommufd_viommu_get_vdev_id(): the virtual ID of ``dev`` (ENOENT if it has none
    on this vIOMMU)."""
    for vdev in viommu.vdevs.values():
        if vdev is not None and vdev.idev.dev is dev:
            return vdev.virt_id
    raise kerr(ENOENT)


def iommufd_viommu_report_event(viommu: IommufdViommu, veventq_type: int,
                                data: bytes) -> None:
    """iommufd_viommu_report_event(): EOPNOTSUPP without a vEVENTQ of that type."""
    if not data:
        viommu.ictx.kernel.warn_on(True, "iommufd_viommu_report_event: no data")
        raise kerr(EINVAL)
    veventq = iommufd_viommu_find_veventq(viommu, veventq_type)
    if veventq is None:
        raise kerr(EOPNOTSUPP)
    veventq.report(data)
