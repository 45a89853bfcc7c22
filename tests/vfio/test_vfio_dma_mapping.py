"""The iommufd modes of the kernel's ``vfio_dma_mapping_test`` and
``vfio_dma_map_limit_test`` (tools/testing/selftests/vfio/vfio_dma_mapping_test.c).

Like the C fixtures: /dev/iommu with one IOAS, the device's cdev bound and attached to
it, IOVAs from the libvfio allocator's rule (the first ``size``-aligned IOVA of the
first range that holds ``size`` bytes), and the same memory types (anonymous private,
hugetlb 2 MiB, hugetlb 1 GiB; skipped like the C test when hugetlb pages are missing).
The C test's ``to_iova`` checks only libvfio's own bookkeeping of its regions, so it has
no kernel counterpart here. The intel-iommu debugfs page-table walk runs where
/sys/kernel/debug/iommu/intel exists, as in C.
"""

from __future__ import annotations

import mmap as _mmap
from collections.abc import Iterator
from dataclasses import dataclass
from errno import EOVERFLOW

import pytest

from backends import Backend
from harness import kselftest, marks
from harness.helpers import Ioas, Iommufd, expect_errno
from harness.helpers.vfio import VfioDevice
from harness.vfio_claim import ClaimedDevice

MAP_HUGETLB = 0x40000
MAP_HUGE_SHIFT = 26
MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT
MAP_HUGE_1GB = 30 << MAP_HUGE_SHIFT
SZ_2M = 2 << 20
SZ_1G = 1 << 30
UINT64_MAX = (1 << 64) - 1
INTEL_DEBUGFS = "/sys/kernel/debug/iommu/intel"


@dataclass(frozen=True)
class MappingVariant:
    """FIXTURE_VARIANT(vfio_dma_mapping_test) for the iommufd mode."""

    size: int        # 0: one page
    mmap_flags: int


MAPPING_VARIANTS = {
    "iommufd_anonymous": MappingVariant(0, 0),
    "iommufd_anonymous_hugetlb_2mb": MappingVariant(SZ_2M, MAP_HUGETLB | MAP_HUGE_2MB),
    "iommufd_anonymous_hugetlb_1gb": MappingVariant(SZ_1G, MAP_HUGETLB | MAP_HUGE_1GB),
}


@dataclass
class VfioIommu:
    """libvfio's ``struct iommu`` in iommufd mode with its device attached."""

    backend: Backend
    fd: Iommufd
    ioas: Ioas
    device: VfioDevice
    bdf: str

    def first_iova(self, size: int) -> int:
        """iova_allocator_alloc's first answer for ``size`` (a power of two)."""
        for r in self.ioas.iova_ranges().ranges:
            last = r.start + size - 1
            if last > r.last:
                continue
            iova = last & ~(size - 1)
            if iova + size - 1 <= r.last:
                return iova
        raise AssertionError(f"IOVA allocator out of space for {size:#x}")

    def map(self, vaddr: int, iova: int, size: int) -> None:
        """iommufd_map: READABLE | WRITEABLE | FIXED_IOVA."""
        self.ioas.map_fixed(vaddr, size, iova)

    def unmap(self, iova: int, size: int) -> int:
        """__iommufd_unmap; returns the unmapped length."""
        return self.ioas.unmap(iova, size)


@pytest.fixture
def vfio_iommu(backend: Backend, vfio_test_device: ClaimedDevice,
               vfio_iommufd: Iommufd) -> Iterator[VfioIommu]:
    """iommu_init("iommufd") + vfio_pci_device_init(): bound and attached."""
    device = VfioDevice.open(backend, vfio_test_device.cdev)
    try:
        device.bind(vfio_iommufd)
        ioas = Ioas.alloc(vfio_iommufd)
        device.attach(ioas.id)
        yield VfioIommu(backend, vfio_iommufd, ioas, device, vfio_test_device.bdf)
    finally:
        device.close()


def _intel_mapping(backend: Backend, bdf: str, iova: int) -> list[int] | None:
    """The PGD..PTE values for ``iova`` from the intel-iommu debugfs walk; None when that
    file does not exist (the C test's -EOPNOTSUPP), [] when the IOVA is not there."""
    path = f"{INTEL_DEBUGFS}/{bdf}/domain_translation_struct"
    try:
        fd = backend.open(path, 0)
    except OSError:
        return None
    try:
        text = b""
        while chunk := backend.read(fd, 65536):
            text += chunk
    finally:
        backend.close(fd)
    for line in text.decode().splitlines():
        fields = [f for f in line.replace("|", " ").split() if f.startswith("0x")]
        if fields and int(fields[0], 16) == iova // backend.page_size:
            return [int(f, 16) for f in fields[1:6]] + [0] * (6 - len(fields))
    return []


# On the host: the session claims the guest's devices and gives them back (vfio_claim).
pytestmark = marks.on_host


class TestMapping:
    pytestmark = [kselftest.fixture("vfio_dma_mapping_test", MAPPING_VARIANTS),
                  marks.requires("vfio_cdev")]

    def test_dma_map_unmap(self, backend: Backend, vfio_iommu: VfioIommu,
                           variant: MappingVariant) -> None:
        size = variant.size or backend.page_size
        flags = _mmap.MAP_ANONYMOUS | _mmap.MAP_PRIVATE | variant.mmap_flags
        try:
            vaddr = backend.mmap(-1, size, 0, _mmap.PROT_READ | _mmap.PROT_WRITE, flags)
        except OSError as exc:
            if variant.mmap_flags & MAP_HUGETLB:
                pytest.skip(f"mmap() failed: {exc.strerror} ({exc.errno})")
            raise
        iova = vfio_iommu.first_iova(size)
        vfio_iommu.map(vaddr, iova, size)
        mapping = _intel_mapping(backend, vfio_iommu.bdf, iova)
        if mapping is not None:
            assert mapping, f"IOVA {iova:#x} not in the intel-iommu page-table walk"
            pud, pmd, pte = mapping[2:5]  # after PGD and P4D
            if size == backend.page_size:
                assert pte != 0
            elif size == SZ_2M:
                assert pte == 0 and pmd != 0
            else:
                assert pte == 0 and pmd == 0 and pud != 0
        assert vfio_iommu.unmap(iova, size) == size
        if mapping is not None:
            assert _intel_mapping(backend, vfio_iommu.bdf, iova) == []
        backend.munmap(vaddr, size)


@pytest.fixture
def limit_region(backend: Backend, vfio_iommu: VfioIommu) -> Iterator[tuple[int, int]]:
    """FIXTURE_SETUP(vfio_dma_map_limit_test): two pages of anonymous memory, and the
    IOVA of the last page of the last IOVA range: ``(vaddr, iova)``."""
    page = backend.page_size
    vaddr = backend.mmap(-1, 2 * page, 0, _mmap.PROT_READ | _mmap.PROT_WRITE,
                         _mmap.MAP_ANONYMOUS | _mmap.MAP_PRIVATE)
    last = vfio_iommu.ioas.iova_ranges().ranges[-1].last
    yield vaddr, last & ~(page - 1)
    backend.munmap(vaddr, 2 * page)


class TestMapLimit:
    pytestmark = [kselftest.fixture("vfio_dma_map_limit_test", {"iommufd": None}),
                  marks.requires("vfio_cdev")]

    def test_unmap_range(self, backend: Backend, vfio_iommu: VfioIommu,
                         limit_region: tuple[int, int]) -> None:
        vaddr, iova = limit_region
        vfio_iommu.map(vaddr, iova, backend.page_size)
        assert vfio_iommu.unmap(iova, backend.page_size) == backend.page_size

    def test_unmap_all(self, backend: Backend, vfio_iommu: VfioIommu,
                       limit_region: tuple[int, int]) -> None:
        vaddr, iova = limit_region
        vfio_iommu.map(vaddr, iova, backend.page_size)
        # libvfio's unmap-all in iommufd mode: IOAS_UNMAP of [0, UINT64_MAX].
        assert vfio_iommu.unmap(0, UINT64_MAX) == backend.page_size

    def test_overflow(self, backend: Backend, vfio_iommu: VfioIommu,
                      limit_region: tuple[int, int]) -> None:
        vaddr, _ = limit_region
        iova = UINT64_MAX & ~(backend.page_size - 1)
        size = 2 * backend.page_size
        with expect_errno(EOVERFLOW):
            vfio_iommu.map(vaddr, iova, size)
        with expect_errno(EOVERFLOW):
            vfio_iommu.unmap(iova, size)
