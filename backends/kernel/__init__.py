"""The real-kernel backend: ioctls on this host's /dev/iommu (a lab machine or a guest)."""

from backends.kernel.backend import KernelBackend
from backends.kernel.diagnose import missing_iommufd_reason

__all__ = ["KernelBackend", "missing_iommufd_reason"]
