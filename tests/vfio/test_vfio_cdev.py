"""The kernel's ``vfio_cdev`` fixture group (tools/testing/selftests/vfio/
vfio_iommufd_setup_test.c): binding a VFIO device cdev to an iommufd and attaching it.

The C test only asserts that the failing calls fail; the errnos checked here are what
drivers/vfio/device_cdev.c and vfio_main.c return (and what real guest runs showed).
"""

from __future__ import annotations

from errno import EINVAL, ENOENT

import uapi_headers as u
from harness import kselftest, marks
from harness.helpers import Iommufd, expect_errno
from harness.helpers.vfio import VfioDevice, vfio_cmd

# On the host: the session claims the guest's devices and gives them back (vfio_claim).
pytestmark = [kselftest.fixture("vfio_cdev"), marks.requires("vfio_cdev"), marks.on_host]

UINT32_MAX = 0xFFFFFFFF


def _get_info(cdev: VfioDevice) -> None:
    cdev.ioctl(u.VFIO_DEVICE_GET_INFO, vfio_cmd("vfio_device_info"))


def test_bind(cdev: VfioDevice, vfio_iommufd: Iommufd) -> None:
    cdev.bind(vfio_iommufd)
    _get_info(cdev)


def test_get_info_without_bind_fails(cdev: VfioDevice) -> None:
    # Until a bind grants access, every ioctl but BIND is EINVAL.
    with expect_errno(EINVAL):
        _get_info(cdev)


def test_bind_bad_iommufd_fails(cdev: VfioDevice) -> None:
    with expect_errno(EINVAL):
        cdev.bind(-2)


def test_repeated_bind_fails(cdev: VfioDevice, vfio_iommufd: Iommufd) -> None:
    cdev.bind(vfio_iommufd)
    with expect_errno(EINVAL):
        cdev.bind(vfio_iommufd)


def test_attach_detatch_pt(cdev: VfioDevice, vfio_iommufd: Iommufd) -> None:
    cdev.bind(vfio_iommufd)
    ioas_id = vfio_iommufd.ioas_alloc()
    cdev.attach(ioas_id)
    cdev.detach()


def test_attach_invalid_pt_fails(cdev: VfioDevice, vfio_iommufd: Iommufd) -> None:
    cdev.bind(vfio_iommufd)
    with expect_errno(ENOENT):
        cdev.attach(UINT32_MAX)
