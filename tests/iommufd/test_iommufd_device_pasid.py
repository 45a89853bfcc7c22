"""The kernel's ``iommufd_device_pasid`` fixture group (tools/testing/selftests/iommu/iommufd.c).

PASID attach / replace / detach of a PASID-capable mock device: a PASID takes only a
HWPT allocated with IOMMU_HWPT_ALLOC_PASID, and only while the RID's HWPT is one too; a
RID cannot leave for an incompatible HWPT while a PASID is attached; attach never
overwrites (EBUSY); replace needs an attached PASID, and when the driver fails it (the
mock driver's PASID 1024) the old domain stays attached. PASID_CHECK_HWPT reads what
the IOMMU core has attached. The no_pasid variant adds a device without PASID support.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from errno import EBUSY, EINVAL, ENOMEM

import pytest

import uapi_headers as u
from backends import Features
from harness import kselftest, marks
from harness.helpers import (
    Ioas,
    Iommufd,
    expect_errno,
    hwpt_alloc,
    mock_domain_flags,
    mock_domain_replace,
)
from harness.helpers.hwpt import nested_hwpt_alloc, selftest_hwpt_data
from harness.helpers.pasid import pasid_attach, pasid_check_hwpt, pasid_detach, pasid_replace
from harness.helpers.viommu import fault_alloc, trigger_iopf, viommu_alloc


@dataclass(frozen=True)
class PasidVariant:
    """FIXTURE_VARIANT(iommufd_device_pasid)."""

    pasid_capable: bool


VARIANTS = {
    "no_pasid": PasidVariant(pasid_capable=False),
    "has_pasid": PasidVariant(pasid_capable=True),
}

pytestmark = [
    kselftest.fixture("iommufd_device_pasid", VARIANTS),
    marks.requires(Features.SELFTEST, reason="the fixture uses IOMMU_TEST_CMD"),
]


@dataclass
class PasidFixture:
    """FIXTURE(iommufd_device_pasid): a PASID-capable mock device on an IOAS, and in the
    no_pasid variant a second device without PASID support."""

    fd: Iommufd
    ioas_id: int
    hwpt_id: int
    stdev_id: int
    device_id: int
    no_pasid_stdev_id: int = 0
    no_pasid_device_id: int = 0

    def attach(self, pasid: int, pt_id: int) -> int:
        """test_cmd_pasid_attach on the fixture's PASID-capable device."""
        return pasid_attach(self.fd, self.stdev_id, pasid, pt_id)

    def replace(self, pasid: int, pt_id: int) -> int:
        """test_cmd_pasid_replace on the fixture's device."""
        return pasid_replace(self.fd, self.stdev_id, pasid, pt_id)

    def detach(self, pasid: int) -> None:
        """test_cmd_pasid_detach on the fixture's device."""
        pasid_detach(self.fd, self.stdev_id, pasid)

    def check(self, pasid: int, hwpt_id: int) -> None:
        """ASSERT_EQ(0, test_cmd_pasid_check_hwpt(...)): ``hwpt_id`` (0: nothing) is
        what the core has on ``pasid``."""
        pasid_check_hwpt(self.fd, self.stdev_id, pasid, hwpt_id)


def setup(fd: Iommufd, variant: PasidVariant) -> PasidFixture:
    """FIXTURE_SETUP(iommufd_device_pasid) on an open iommufd."""
    ioas = Ioas.alloc(fd)
    dom = mock_domain_flags(fd, ioas.id, u.MOCK_FLAGS_DEVICE_PASID)
    fx = PasidFixture(fd, ioas.id, dom.hwpt_id, dom.stdev_id, dom.idev_id)
    if not variant.pasid_capable:
        other = mock_domain_flags(fd, ioas.id, 0)
        fx.no_pasid_stdev_id, fx.no_pasid_device_id = other.stdev_id, other.idev_id
    return fx


@pytest.fixture(name="self")
def pasid_fixture(iommufd: Iommufd, variant: PasidVariant) -> Iterator[PasidFixture]:
    """The case's fixture; the teardown is the ``iommufd`` fixture's."""
    yield setup(iommufd, variant)


@dataclass
class PasidHwpts:
    """The HWPTs pasid_attach allocates up front."""

    parent: int             # NEST_PARENT, not PASID-compatible
    nested: list[int]       # three PASID-compatible nested HWPTs ([2] on a vIOMMU)
    iopf: int               # PASID-compatible nested HWPT reporting to a fault queue
    s2: int                 # PASID-compatible paging HWPT
    fault_id: int = 0
    fault_fd: int = 0


def alloc_hwpts(self: PasidFixture, with_viommu: bool = True) -> PasidHwpts:
    """The allocation phase: two nested HWPTs on one parent, a fault-queue one, one on a
    vIOMMU (only ``with_viommu``; else nested[2] stays 0) and a PASID-compatible S2."""
    fd = self.fd
    data = selftest_hwpt_data(fd)
    parent = hwpt_alloc(fd, self.device_id, self.ioas_id, u.IOMMU_HWPT_ALLOC_NEST_PARENT)
    nested = [nested_hwpt_alloc(fd, self.device_id, parent, data, u.IOMMU_HWPT_ALLOC_PASID),
              nested_hwpt_alloc(fd, self.device_id, parent, data, u.IOMMU_HWPT_ALLOC_PASID), 0]
    fault_id = fault_fd = iopf = 0
    if with_viommu:
        fault_id, fault_fd = fault_alloc(fd)
        iopf = nested_hwpt_alloc(fd, self.device_id, parent, data,
                                 u.IOMMU_HWPT_FAULT_ID_VALID | u.IOMMU_HWPT_ALLOC_PASID,
                                 fault_id=fault_id)
        viommu_id = viommu_alloc(fd, self.device_id, parent)
        nested[2] = nested_hwpt_alloc(fd, self.device_id, viommu_id, data,
                                      u.IOMMU_HWPT_ALLOC_PASID)
    s2 = hwpt_alloc(fd, self.device_id, self.ioas_id, u.IOMMU_HWPT_ALLOC_PASID)
    return PasidHwpts(parent, nested, iopf, s2, fault_id, fault_fd)


def attach_rules(self: PasidFixture, variant: PasidVariant, h: PasidHwpts) -> None:
    """PASID-compatibility of the RID and the PASID, attach never overwriting (EBUSY)."""
    fd, pasid = self.fd, 100
    # A RID on a non-PASID-compatible HWPT keeps PASIDs out.
    mock_domain_replace(fd, self.stdev_id, h.parent)
    with expect_errno(EINVAL):
        self.attach(pasid, h.s2)
    # On a compatible one it lets them in, and then cannot leave for an incompatible one.
    mock_domain_replace(fd, self.stdev_id, h.s2)
    self.attach(pasid, h.nested[0])
    with expect_errno(EINVAL):
        mock_domain_replace(fd, self.stdev_id, h.parent)
    self.detach(pasid)
    self.check(pasid, 0)

    if not variant.pasid_capable:
        # A PASID-compatible HWPT serves a device without PASID support on its RID,
        mock_domain_replace(fd, self.no_pasid_stdev_id, h.nested[0])
        mock_domain_replace(fd, self.no_pasid_stdev_id, self.ioas_id)
        # but that device's PASIDs take nothing, compatible or not.
        with expect_errno(EINVAL):
            pasid_attach(fd, self.no_pasid_stdev_id, pasid, h.parent)
        with expect_errno(EINVAL):
            pasid_attach(fd, self.no_pasid_stdev_id, pasid, h.s2)

    # A HWPT without ALLOC_PASID, or an IOAS (an auto domain is not one), is refused.
    with expect_errno(EINVAL):
        self.attach(pasid, h.parent)
    self.check(pasid, 0)
    with expect_errno(EINVAL):
        self.attach(pasid, self.ioas_id)
    self.check(pasid, 0)

    self.attach(pasid, h.s2)
    self.check(pasid, h.s2)
    with expect_errno(EBUSY):
        self.attach(pasid, h.nested[0])  # attach does not overwrite: replace does
    self.detach(pasid)
    self.check(pasid, 0)

    self.attach(pasid, h.nested[0])
    self.check(pasid, h.nested[0])
    with expect_errno(EBUSY):
        self.attach(pasid, h.nested[0])
    self.detach(pasid)


def replace_rules(self: PasidFixture, h: PasidHwpts) -> None:
    """Replace needs an attached PASID; a refused or failed replace keeps the old HWPT."""
    pasid = 200
    with expect_errno(EINVAL):
        self.replace(pasid, h.s2)
    self.attach(pasid, h.s2)
    self.check(pasid, h.s2)
    with expect_errno(EINVAL):
        self.replace(pasid, self.ioas_id)
    self.check(pasid, h.s2)
    self.replace(pasid, h.nested[0])
    self.check(pasid, h.nested[0])
    self.replace(pasid, h.nested[1])
    self.check(pasid, h.nested[1])
    self.detach(pasid)

    # The mock driver fails the set_dev_pasid after an attach of PASID 1024: the core
    # must leave the old domain attached.
    pasid = u.IOMMU_TEST_PASID_RESERVED
    self.attach(pasid, h.s2)
    self.check(pasid, h.s2)
    with expect_errno(ENOMEM):
        self.replace(pasid, h.nested[0])
    self.check(pasid, h.s2)
    self.detach(pasid)


def test_pasid_attach(self: PasidFixture, variant: PasidVariant) -> None:
    backend = self.fd.backend
    missing = backend.missing(Features.FAULT_QUEUE, Features.VIOMMU)
    if missing:
        pytest.skip(f"backend {backend.spec} lacks {', '.join(missing)}: the case takes "
                    "an IOPF on a PASID and allocates a nested HWPT on a vIOMMU")
    fd = self.fd
    # Detaching a PASID that was never attached is allowed.
    self.detach(100)
    h = alloc_hwpts(self)
    attach_rules(self, variant, h)
    replace_rules(self, h)

    # An IOPF on a PASID attached to a fault-queue HWPT is delivered and answered.
    pasid = 2048
    self.attach(pasid, h.iopf)
    self.check(pasid, h.iopf)
    trigger_iopf(fd, self.device_id, h.fault_fd, pasid)
    self.replace(pasid, h.s2)
    self.check(pasid, h.s2)
    self.detach(pasid)

    fd.destroy(h.iopf)
    backend.close(h.fault_fd)
    fd.destroy(h.fault_id)
    mock_domain_replace(fd, self.stdev_id, self.ioas_id)
