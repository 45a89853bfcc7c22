"""The selftest's dma-buf exporter (IOMMU_TEST_OP_DMABUF_GET / _REVOKE, selftest.c)
and what iommufd does with an imported dma-buf (pages.c, IOPT_ADDRESS_DMABUF).

DMABUF_GET makes a dma-buf of zeroed, physically contiguous kernel memory and
returns its new fd as the ioctl's return value. That is the driver's intent and what
7.2.13 does; 7.3.x's op returns 0 instead, a known kernel issue
(harness/known_issues.toml).

IOAS_MAP_FILE of such an fd attaches to the dma-buf and maps its physical range: no
page is pinned or accounted. DMABUF_REVOKE(true) makes every importer drop its
mappings from the domains (the importer's invalidate callback, iopt_revoke_notify)
and refuses new attachments with ENODEV; revoking back to false lets new mappings
attach but leaves the revoked ones revoked.
"""

from __future__ import annotations

from errno import EBADF, EINVAL, ENODEV
from typing import TYPE_CHECKING

from backends.mock.errors import kerr
from backends.mock.files import File
from backends.mock.mm import PAGE_SIZE, PhysPage

if TYPE_CHECKING:
    from backends.mock.kernel import Kernel
    from backends.mock.pages import IoptPages
    from backends.mock.private import Ucmd

DMABUF_MAX_PAGES = 512
"""The test exporter's size limit, in pages."""


class DmaBufFile(File):
    """A dma-buf's file: its memory, whether the exporter revoked it, its importers."""

    name = "dmabuf"

    def __init__(self, kernel: Kernel, length: int) -> None:
        super().__init__()
        self.size = length
        phys = kernel.phys
        # kzalloc memory: one physically contiguous run.
        self.memory: list[PhysPage] = [phys.alloc() for _ in range(length // PAGE_SIZE)]
        self.revoked = False
        self.importers: list[IoptPages] = []
        """iopt_pages attached to this dma-buf (dma_buf_dynamic_attach)."""

    def attach(self, pages: IoptPages) -> list[PhysPage]:
        """dma_buf_dynamic_attach + the exporter's map: the physical pages, or ENODEV
        once revoked."""
        if self.revoked:
            raise kerr(ENODEV)
        self.get()
        self.importers.append(pages)
        return self.memory

    def detach(self, pages: IoptPages) -> None:
        """dma_buf_detach + dma_buf_put, when the importing pages are released."""
        self.importers.remove(pages)
        self.put()

    def revoke(self, revoked: bool) -> None:
        """The exporter flips ``revoked`` and invalidates every importer's mappings."""
        self.revoked = revoked
        for pages in list(self.importers):
            pages.dmabuf_revoke_notify()


def dmabuf_get(ucmd: Ucmd, open_flags: int, length: int) -> int:
    """IOMMU_TEST_OP_DMABUF_GET: a new test dma-buf of ``length`` bytes (page
    aligned, at most 512 pages, else EINVAL); returns its fd."""
    length = (length + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE
    if length == 0 or length > PAGE_SIZE * DMABUF_MAX_PAGES:
        raise kerr(EINVAL)
    kernel = ucmd.ictx.kernel
    fd: int = kernel.files.install(DmaBufFile(kernel, length))
    return fd


def dmabuf_revoke(ucmd: Ucmd, fd: int, revoked: bool) -> int:
    """IOMMU_TEST_OP_DMABUF_REVOKE: EBADF for no file, EINVAL for a file that is not
    a dma-buf (dma_buf_get)."""
    file = ucmd.ictx.kernel.files.fget(fd)
    if file is None:
        raise kerr(EBADF)
    try:
        if not isinstance(file, DmaBufFile):
            raise kerr(EINVAL)
        file.revoke(revoked)
    finally:
        file.put()
    return 0
