"""The helper layer: readable calls for scenarios, identical on every backend."""

from harness.helpers.core import (
    DEV_IOMMU,
    Iommufd,
    SelftestGlobals,
    errno_name,
    expect_errno,
    new_cmd,
)

__all__ = [
    "DEV_IOMMU",
    "Iommufd",
    "SelftestGlobals",
    "errno_name",
    "expect_errno",
    "new_cmd",
]
