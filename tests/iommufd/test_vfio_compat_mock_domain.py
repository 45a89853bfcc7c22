"""The kernel's ``vfio_compat_mock_domain`` fixture group (tools/testing/selftests/iommu/iommufd.c).

An iommufd used as a VFIO type1 / type1v2 container, with one mock device standing for the
VFIO group: IOMMU_OPTION_HUGE_PAGES per type, the GET_INFO capability chain at every argsz,
MAP/UNMAP_DMA with UNMAP_FLAG_ALL, and type1's cutting of larger mappings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from errno import EINVAL, ENOENT
from typing import Any

import pytest

import uapi_headers as u
from backends.contract import Features
from harness import kselftest, marks
from harness.helpers import (
    Ioas,
    Iommufd,
    SelftestGlobals,
    Type1Container,
    expect_errno,
    mock_domain,
    new_cmd,
)

MOCK_APERTURE_START = u.MOCK_APERTURE_START
INFO = "struct vfio_iommu_type1_info"
CAP_HEADER = "struct vfio_info_cap_header"
# Every GET_INFO answer has both flags: page sizes, and the capability chain's size.
INFO_FLAGS = u.VFIO_IOMMU_INFO_PGSIZES | u.VFIO_IOMMU_INFO_CAPS


@dataclass(frozen=True)
class VfioCompatVariant:
    """FIXTURE_VARIANT(vfio_compat_mock_domain)."""

    version: int


VARIANTS = {
    "Ver1v2": VfioCompatVariant(version=u.VFIO_TYPE1v2_IOMMU),
    "Ver1v0": VfioCompatVariant(version=u.VFIO_TYPE1_IOMMU),
}

pytestmark = [
    kselftest.fixture("vfio_compat_mock_domain", VARIANTS),
    marks.requires(Features.SELFTEST, reason="the VFIO group is a mock device"),
]


@dataclass
class VfioCompatFixture:
    """FIXTURE(vfio_compat_mock_domain): the fd as a type1 container on ``ioas``."""

    fd: Iommufd
    ioas: Ioas
    container: Type1Container


@pytest.fixture
def self(iommufd: Iommufd, variant: VfioCompatVariant) -> VfioCompatFixture:
    """FIXTURE_SETUP(vfio_compat_mock_domain); teardown is the ``iommufd`` fixture's."""
    # Create what VFIO would consider a group
    ioas = Ioas.alloc(iommufd)
    mock_domain(iommufd, ioas.id)
    # Attach it to the vfio compat
    container = Type1Container(iommufd)
    container.set_ioas(ioas.id)
    container.set_iommu(variant.version)
    return VfioCompatFixture(iommufd, ioas, container)


def _pages_shuffled(first_iova: int, count: int, step: int) -> list[int]:
    """``count`` IOVAs ``step`` apart, in the (fixed, like an unseeded rand()) shuffled
    order the kernel's shuffle_array() unmaps them in."""
    iovas = [first_iova + i * step for i in range(count)]
    random.Random(count).shuffle(iovas)
    return iovas


def test_simple_close(self: VfioCompatFixture) -> None:
    pass


def test_option_huge_pages(self: VfioCompatFixture, variant: VfioCompatVariant) -> None:
    # val64 starts non-zero so that a GET which does not write it cannot pass.
    cmd = new_cmd("iommu_option", {"option_id": u.IOMMU_OPTION_HUGE_PAGES,
                                   "op": u.IOMMU_OPTION_OP_GET, "val64": 3,
                                   "object_id": self.ioas.id})
    assert self.fd.ioctl(u.IOMMU_OPTION, cmd) == 0
    # type1 maps and unmaps with PAGE_SIZE granularity, so the compat IOAS loses huge pages.
    assert cmd.val64 == (0 if variant.version == u.VFIO_TYPE1_IOMMU else 1)


def _get_info_checked(self: VfioCompatFixture, raw: Any, argsz: int) -> Any:
    """The kernel's ioctl_check_buf(): GET_INFO with ``argsz`` into the zeroed info header
    of ``raw``; every byte from argsz on must keep its 0xAA canary."""
    length = len(raw)
    info = u.ffi.cast(f"{INFO} *", raw)
    u.ffi.memmove(info, bytes(u.ffi.sizeof(INFO)), u.ffi.sizeof(INFO))
    u.ffi.memmove(raw + argsz, b"\xaa" * (length - argsz), length - argsz)
    self.container.get_info(argsz, raw)
    assert u.ffi.buffer(raw)[argsz:] == b"\xaa" * (length - argsz), \
        f"GET_INFO with argsz {argsz} wrote past it"
    return info


def _check_cap_chain(raw: Any, info: Any) -> None:
    """check_vfio_info_cap_chain(): walk the chain the kernel reported in ``raw``."""
    header_size = u.ffi.sizeof(CAP_HEADER)
    argsz = int(info.argsz)
    assert argsz >= info.cap_offset + header_size
    offset = int(info.cap_offset)
    while True:
        cap = u.ffi.cast(f"{CAP_HEADER} *", raw + offset)
        cap_size = (cap.next if cap.next else argsz) - offset
        if cap.id == u.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            iova_range = u.ffi.cast("struct vfio_iommu_type1_info_cap_iova_range *", cap)
            assert iova_range.header.version == 1
            assert iova_range.nr_iovas == 1
            assert iova_range.iova_ranges[0].start == MOCK_APERTURE_START
            assert iova_range.iova_ranges[0].end == u.MOCK_APERTURE_LAST
        elif cap.id == u.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
            dma_avail = u.ffi.cast("struct vfio_iommu_type1_info_dma_avail *", cap)
            assert dma_avail.header.version == 1
            assert cap_size == u.ffi.sizeof("struct vfio_iommu_type1_info_dma_avail")
        else:
            raise AssertionError(f"unexpected capability id {cap.id} at offset {offset}")
        if not cap.next:
            break
        assert argsz >= cap.next + header_size
        assert cap.next >= offset
        offset = int(cap.next)


def test_get_info(self: VfioCompatFixture, kglobals: SelftestGlobals) -> None:
    raw = u.ffi.new("char[]", kglobals.buffer_size)

    # Pre-cap ABI
    info = _get_info_checked(self, raw, u.offsetofend(INFO, "iova_pgsizes"))
    assert info.iova_pgsizes != 0
    assert info.flags == INFO_FLAGS

    # Read the cap chain size
    info = _get_info_checked(self, raw, u.ffi.sizeof(INFO))
    assert info.iova_pgsizes != 0
    assert info.flags == INFO_FLAGS
    assert info.cap_offset == 0
    assert info.argsz > u.ffi.sizeof(INFO)

    # Read the caps, kernel should never create a corrupted caps
    caplen = int(info.argsz)
    for argsz in range(u.ffi.sizeof(INFO), caplen):
        info = _get_info_checked(self, raw, argsz)
        assert info.flags == INFO_FLAGS
        if info.cap_offset:
            _check_cap_chain(raw, info)


def test_map(self: VfioCompatFixture, kglobals: SelftestGlobals) -> None:
    container = self.container
    buffer, buffer_size, page_size = kglobals.buffer, kglobals.buffer_size, kglobals.page_size

    # Simple map/unmap
    container.map_dma(buffer, MOCK_APERTURE_START, buffer_size)
    assert container.unmap_dma(MOCK_APERTURE_START, buffer_size) == buffer_size
    # Unmap of empty is success
    size = container.unmap_dma(MOCK_APERTURE_START, buffer_size)

    # UNMAP_FLAG_ALL requires 0 iova/size
    container.map_dma(buffer, MOCK_APERTURE_START, buffer_size)
    with expect_errno(EINVAL):
        container.unmap_dma(MOCK_APERTURE_START, size, u.VFIO_DMA_UNMAP_FLAG_ALL)
    assert container.unmap_dma(0, 0, u.VFIO_DMA_UNMAP_FLAG_ALL) == buffer_size

    # Small pages
    pages = buffer_size // page_size
    for i in range(pages):
        container.map_dma(buffer + i * page_size, MOCK_APERTURE_START + i * page_size,
                          page_size)
    for iova in _pages_shuffled(MOCK_APERTURE_START, pages, page_size):
        container.unmap_dma(iova, page_size)


@marks.requires(Features.HUGEPAGES, reason="the container maps MAP_HUGETLB memory")
def test_huge_map(self: VfioCompatFixture, variant: VfioCompatVariant,
                  kglobals: SelftestGlobals) -> None:
    backend = self.fd.backend
    buf_size = kglobals.hugepage_size * 2
    pieces = 16

    # Test huge pages and splitting
    buf = backend.alloc(buf_size, shared=True, hugetlb=True)
    self.container.map_dma(buf, MOCK_APERTURE_START, buf_size)

    # type1 mode can cut up larger mappings, type1v2 always fails
    piece = buf_size // pieces
    for iova in _pages_shuffled(MOCK_APERTURE_START, pieces, piece):
        if variant.version == u.VFIO_TYPE1_IOMMU:
            self.container.unmap_dma(iova, piece)
        else:
            with expect_errno(ENOENT):
                self.container.unmap_dma(iova, piece)
    backend.munmap(buf, buf_size)
