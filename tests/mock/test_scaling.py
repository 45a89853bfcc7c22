"""Map/unmap cost must not grow with the number of areas (O(log n) structures)."""

from __future__ import annotations

import time

import uapi_headers as u
from backends.mock import MockBackend
from tests.mock.helpers import PAGE_SIZE, RW, Fd, new


def _per_op(n_areas: int, auto: bool, ops: int = 600) -> float:
    be = MockBackend()
    fd = Fd(be)
    ioas = fd.ioas()
    fd.mock_domain(ioas)
    buf = be.alloc(PAGE_SIZE)
    cmd = new("iommu_ioas_map", ioas_id=ioas, user_va=buf, length=PAGE_SIZE)
    unmap = new("iommu_ioas_unmap", ioas_id=ioas, length=PAGE_SIZE)
    fixed = u.IOMMU_IOAS_MAP_FIXED_IOVA

    def one(i: int) -> None:
        cmd.flags = RW if auto else RW | fixed
        cmd.iova = u.MOCK_APERTURE_START + 2 * i * PAGE_SIZE
        fd.ioctl(u.IOMMU_IOAS_MAP, cmd)

    for i in range(n_areas):
        one(i)
    best = float("inf")
    for rep in range(3):
        start = time.process_time()
        for j in range(ops):
            one(n_areas + rep * ops + j)
            unmap.iova = cmd.iova
            fd.ioctl(u.IOMMU_IOAS_UNMAP, unmap)
        best = min(best, (time.process_time() - start) / ops)
    be.shutdown()
    return best


def test_map_unmap_cost_does_not_grow_with_areas() -> None:
    for auto in (False, True):
        small = _per_op(200, auto)
        large = _per_op(20000, auto)
        assert large < 2.5 * small, (auto, small, large)
