"""PASID attachments of a mock device: the IOMMU_TEST_OP_PASID_* ops.

The Python side of iommufd_utils.h's ``test_cmd_pasid_*`` helpers. Each names the mock
device by its selftest object (``stdev_id``, from :func:`~harness.helpers.mock_domain`)
and raises ``OSError`` with the kernel's errno, for ``expect_errno``::

    pasid_attach(fd, stdev_id, 100, hwpt_id)       # EBUSY if PASID 100 is attached
    pasid_check_hwpt(fd, stdev_id, 100, hwpt_id)   # EINVAL unless hwpt_id's domain is there
    pasid_replace(fd, stdev_id, 100, other_id)     # EINVAL unless attached
    pasid_detach(fd, stdev_id, 100)                # never fails
    pasid_check_hwpt(fd, stdev_id, 100, 0)         # 0: "nothing attached"
"""

from __future__ import annotations

import uapi_headers as u
from harness.helpers.core import Iommufd
from harness.helpers.selftest import run_test_cmd

__all__ = ["pasid_attach", "pasid_check_hwpt", "pasid_detach", "pasid_replace"]


def pasid_attach(fd: Iommufd, stdev_id: int, pasid: int, pt_id: int) -> int:
    """PASID_ATTACH of ``pasid`` to HWPT or IOAS ``pt_id``; returns the HWPT attached."""
    cmd = run_test_cmd(fd, u.IOMMU_TEST_OP_PASID_ATTACH, stdev_id,
                       pasid_attach={"pasid": pasid, "pt_id": pt_id})
    return int(cmd.pasid_attach.pt_id)


def pasid_replace(fd: Iommufd, stdev_id: int, pasid: int, pt_id: int) -> int:
    """PASID_REPLACE: switch an attached ``pasid`` to ``pt_id``, or change nothing on
    failure; returns the HWPT attached."""
    cmd = run_test_cmd(fd, u.IOMMU_TEST_OP_PASID_REPLACE, stdev_id,
                       pasid_replace={"pasid": pasid, "pt_id": pt_id})
    return int(cmd.pasid_replace.pt_id)


def pasid_detach(fd: Iommufd, stdev_id: int, pasid: int) -> None:
    """PASID_DETACH: ``pasid`` back to blocking (a no-op when nothing is attached)."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_PASID_DETACH, stdev_id, pasid_detach={"pasid": pasid})


def pasid_check_hwpt(fd: Iommufd, stdev_id: int, pasid: int, hwpt_id: int) -> None:
    """PASID_CHECK_HWPT: the IOMMU core has HWPT ``hwpt_id``'s domain on ``pasid``, or
    nothing when ``hwpt_id`` is 0 (EINVAL otherwise)."""
    run_test_cmd(fd, u.IOMMU_TEST_OP_PASID_CHECK_HWPT, stdev_id,
                 pasid_check={"pasid": pasid, "hwpt_id": hwpt_id})
