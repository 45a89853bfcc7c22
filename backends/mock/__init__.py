"""The ``mock`` backend: an in-Python model of the kernel's iommufd core and its
selftest mock IOMMU driver, faithful at the ABI level (structs in, errno and struct
fields out).

The modules mirror drivers/iommu/iommufd/ so a reader of the kernel finds their way:

=================  ==========================================================
main               the iommufd file and its ioctl dispatch table (on top)
private            iommufd_private.h: the context, object lifecycle, ucmd
objects            object types and the per-fd ID table (the objects xarray)
ioas               the IOAS object and its ioctls
io_pagetable       areas, reserved/allowed IOVA, IOVA allocation, domains
pages              iopt_pages: pinning, pin counts, accounting
device             bound devices, attaching a HWPT, GET_HW_INFO
device_attach      attach / replace / detach entry points (auto domains)
hw_pagetable       HWPT objects and their ioctls
access             in-kernel IOAS users (pin pages, rw, unmap notification)
vfio_compat        VFIO type1/type1v2 container emulation
selftest           IOMMU_TEST_CMD ops
mock_driver        the mock IOMMU driver: devices and 2 KiB-page domains
iommu              the IOMMU core's domain and its IO page table
viommu             vIOMMU, vDEVICE and HW queue objects and their ioctls
eventq             FAULT (IOPF) and vEVENT queues and their fds
driver             what the core offers vIOMMU drivers: mmap regions, lookups
mock_viommu        the mock driver's vIOMMU: mmap page, device-cache invalidation
mm, uaccess        simulated user memory; copy_{from,to}_user
task, files        the current task (caps, rlimits, counters) and its fd table
fault              fail-nth fault injection at the kernel's should_fail sites
interval_tree      O(log n) interval sets and the free-IOVA hole tree
kernel             the machine-wide state shared by all of the above
backend            MockBackend: the backend contract on top
=================  ==========================================================

Imports run only downward (tests/mock/test_layering.py): concept modules reach the
context through private, never main.
"""

from backends.mock.backend import MockBackend

__all__ = ["MockBackend"]
