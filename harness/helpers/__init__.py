"""The helper layer: readable calls for scenarios, identical on every backend."""

from harness.helpers.access import Access, check_access_rw, create_access
from harness.helpers.core import (
    DEV_IOMMU,
    Iommufd,
    SelftestGlobals,
    errno_name,
    expect_errno,
    new_cmd,
)
from harness.helpers.hwpt import nested_hwpt_alloc, selftest_hwpt_data
from harness.helpers.ioas import (
    MAP_RW,
    UNMAP_ALL_LENGTH,
    Ioas,
    IovaRange,
    IovaRanges,
    change_process,
    option_get,
    option_set,
    read_iova_ranges,
    write_iova_ranges,
)
from harness.helpers.selftest import (
    DEFAULT_MEMORY_LIMIT,
    MockChecks,
    MockDomain,
    add_reserved,
    check_map,
    check_refs,
    dev_check_cache,
    dev_check_cache_all,
    dmabuf_get,
    dmabuf_revoke,
    hwpt_alloc,
    hwpt_check_iotlb,
    hwpt_check_iotlb_all,
    memfd_mmap,
    mock_domain,
    mock_domain_flags,
    mock_domain_replace,
    run_test_cmd,
    set_default_memory_limit,
    set_temp_memory_limit,
    test_cmd,
)
from harness.helpers.vfio_compat import TYPE1_RW, Type1Container, vfio_ioas
from harness.helpers.viommu import (
    EntryNum,
    EventQueue,
    VeventSequence,
    fault_alloc,
    hw_queue_alloc,
    iommufd_mmap,
    read_vevents,
    trigger_iopf,
    trigger_vevents,
    vdevice_alloc,
    veventq_alloc,
    viommu_alloc,
    viommu_invalidate,
)

__all__ = [
    "DEV_IOMMU",
    "Iommufd",
    "SelftestGlobals",
    "errno_name",
    "expect_errno",
    "new_cmd",
]

# The IOMMU_TEST_CMD helpers (harness.helpers.selftest).
__all__ += [
    "DEFAULT_MEMORY_LIMIT",
    "MockChecks",
    "MockDomain",
    "add_reserved",
    "check_map",
    "check_refs",
    "dev_check_cache",
    "dev_check_cache_all",
    "dmabuf_get",
    "dmabuf_revoke",
    "hwpt_alloc",
    "hwpt_check_iotlb",
    "hwpt_check_iotlb_all",
    "memfd_mmap",
    "mock_domain",
    "mock_domain_flags",
    "mock_domain_replace",
    "run_test_cmd",
    "set_default_memory_limit",
    "set_temp_memory_limit",
    "test_cmd",
]

# VFIO type1 compat (harness.helpers.vfio_compat).
__all__ += ["TYPE1_RW", "Type1Container", "vfio_ioas"]

# The IOAS and access-object helpers (harness.helpers.ioas, harness.helpers.access).
__all__ += [
    "MAP_RW",
    "UNMAP_ALL_LENGTH",
    "Access",
    "Ioas",
    "IovaRange",
    "IovaRanges",
    "change_process",
    "check_access_rw",
    "create_access",
    "option_get",
    "option_set",
    "read_iova_ranges",
    "write_iova_ranges",
]

# vIOMMU, vDEVICE, HW queues and event queues (harness.helpers.viommu).
__all__ += [
    "EntryNum",
    "EventQueue",
    "VeventSequence",
    "fault_alloc",
    "hw_queue_alloc",
    "iommufd_mmap",
    "nested_hwpt_alloc",
    "read_vevents",
    "selftest_hwpt_data",
    "trigger_iopf",
    "trigger_vevents",
    "vdevice_alloc",
    "veventq_alloc",
    "viommu_alloc",
    "viommu_invalidate",
]
