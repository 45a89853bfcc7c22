"""Fault injection: ``should_fail()`` and ``/proc/thread-self/fail-nth``.

The kernel's fail-nth counter lives in the task: writing N arms it, every fault-injectable
call site (failslab, fail_page_alloc and ``iommufd_should_fail()``) decrements it, and the
call that brings it to zero fails. Reading gives the remaining count, so 0 means "fired".

The model keeps one named fault point at each place where the kernel's iommufd code can
fail through injection; the names are the kernel functions the points sit in, so a
fail_nth sweep walks the same error paths in the same order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from errno import EINVAL, ENOMEM

from backends.mock.errors import kerr

# The fault points, named after the kernel function holding the should_fail() site
# (iommufd_should_fail() or an allocation that failslab can fail).
IOMMUFD_FOPS_OPEN = "iommufd_fops_open"            # kzalloc of the ctx -> ENOMEM
OBJECT_ALLOC = "_iommufd_object_alloc"             # kzalloc + xa_alloc -> ENOMEM
GET_OBJECT = "iommufd_get_object"                  # iommufd_should_fail -> ENOENT
AREA_ALLOC = "iopt_area_alloc"                     # kzalloc -> ENOMEM
PAGES_ALLOC = "iopt_alloc_pages"                   # kzalloc -> ENOMEM
PAGES_LIST_ALLOC = "iopt_get_pages"                # kzalloc of a list element -> ENOMEM
ALLOWED_ALLOC = "iommufd_ioas_load_iovas"          # kzalloc -> ENOMEM
RESERVED_ALLOC = "iopt_reserve_iova"               # kzalloc -> ENOMEM
TEMP_KMALLOC = "temp_kmalloc"                      # iommufd_should_fail -> ENOMEM
TEMP_KMALLOC_SLAB = "temp_kmalloc:kmalloc"         # kmalloc -> retry at PAGE_SIZE, ENOMEM
USER_PIN = "pfn_reader_user_pin"                   # iommufd_should_fail -> EFAULT
UPDATE_PINNED = "pfn_reader_user_update_pinned"    # iommufd_should_fail -> ENOMEM
PAGES_TO_XARRAY = "pages_to_xarray"                # iommufd_should_fail -> EINVAL
RW_PAGE = "iopt_pages_rw_page"                     # iommufd_should_fail -> EINVAL
ACCESS_NODE_ALLOC = "iopt_area_add_access"         # kzalloc -> ENOMEM
RESV_REGIONS = "iopt_table_enforce_dev_resv_regions"  # iommufd_should_fail -> EINVAL
ATTACH_ALLOC = "iommufd_hw_pagetable_attach"       # kzalloc of the attach -> ENOMEM
HANDLE_ALLOC = "iommufd_hwpt_attach_device"        # kzalloc of the attach handle -> ENOMEM
GROUP_ALLOC = "iommufd_alloc_group"                # kzalloc -> ENOMEM
DOMAIN_ALLOC = "mock_domain_alloc_pgtable"         # kzalloc -> ENOMEM
NESTED_DOMAIN_ALLOC = "__mock_domain_alloc_nested"  # kzalloc -> ENOMEM
MOCK_DEV_ALLOC = "mock_dev_create"                 # kzalloc -> ENOMEM
HW_INFO_ALLOC = "mock_domain_hw_info"              # kzalloc -> ENOMEM
STACCESS_ALLOC = "iommufd_test_alloc_access"       # kzalloc -> ENOMEM
ACCESS_ITEM_ALLOC = "iommufd_test_access_pages"    # kzalloc of the item -> ENOMEM
# vIOMMU, its queues and the mock driver's vIOMMU
MMAP_ALLOC = "_iommufd_alloc_mmap"                 # kzalloc of the region -> ENOMEM
EVENTQ_FILE = "iommufd_eventq_init"                # anon_inode_getfile -> ENOMEM
VEVENT_ALLOC = "iommufd_viommu_report_event"       # kzalloc (GFP_NOWAIT) -> lost event
IOPF_GROUP_ALLOC = "iopf_group_alloc"              # kzalloc -> the request is aborted
FAULT_COOKIE_ALLOC = "iommufd_fault_fops_read"     # xa_alloc of the cookie -> ENOMEM
HW_QUEUE_PAGES = "iommufd_hw_queue_alloc_phys"     # kvzalloc of the page array -> ENOMEM
VIOMMU_PAGES = "mock_viommu_init"                  # __get_free_pages -> ENOMEM
VIOMMU_INV_ALLOC = "mock_viommu_cache_invalidate"  # kzalloc of the commands -> ENOMEM
NESTED_DOMAIN_ALLOC = "__mock_domain_alloc_nested"  # kzalloc -> ENOMEM


#: The points that are ``iommufd_should_fail()`` (the kernel's ``fail_iommufd`` fault
#: attribute); the others are allocations, which the kernel fails through ``failslab``.
IOMMUFD_SHOULD_FAIL = frozenset({
    GET_OBJECT, RESV_REGIONS, TEMP_KMALLOC, USER_PIN, UPDATE_PINNED, PAGES_TO_XARRAY,
    RW_PAGE,
})


def fault_attr(site: str) -> str:
    """The kernel fault attribute (debugfs name) that fails at ``site``."""
    return "fail_iommufd" if site in IOMMUFD_SHOULD_FAIL else "failslab"


def temp_kmalloc(should_fail: Callable[[str], bool], size: int, limit: int,
                 page_size: int) -> int:
    """pages.c's temp_kmalloc() without a backup buffer: the bytes granted, or ENOMEM.

    Three fault points: iommufd_should_fail(), the kmalloc of ``min(size, limit)``
    (when it fails, a second kmalloc of one page is tried: a bigger batch, no error),
    and that second kmalloc.
    """
    if should_fail(TEMP_KMALLOC):
        raise kerr(ENOMEM)
    if not should_fail(TEMP_KMALLOC_SLAB):
        return min(size, limit)
    if should_fail(TEMP_KMALLOC_SLAB):
        raise kerr(ENOMEM)
    return page_size


class FaultInjector:
    """The simulated task's fail-nth counter."""

    def __init__(self) -> None:
        self._nth = 0
        self.fired_at: str | None = None
        self.injected: Counter[str] = Counter()
        """Faults injected so far per fault attribute (as debugfs ``times`` counts down)."""
        """The fault point that fired last (for diagnostics)."""
        self.trace: list[str] | None = None
        """Set to a list to record every fault point reached (for sweeps and tests)."""

    def write(self, n: int) -> None:
        """``echo N > fail-nth``: the N-th following fault point fails; 0 disarms."""
        if n < 0:
            raise kerr(EINVAL)
        self._nth = n
        self.fired_at = None

    def read(self) -> int:
        """``cat fail-nth``: the remaining count, 0 once the fault fired."""
        return self._nth

    def should_fail(self, site: str) -> bool:
        """One fault-injectable call at ``site``; True when it is the armed one."""
        if self.trace is not None:
            self.trace.append(site)
        nth = self._nth
        if not nth:
            return False
        nth -= 1
        self._nth = nth
        if nth == 0:
            self.fired_at = site
            self.injected[fault_attr(site)] += 1
            return True
        return False
