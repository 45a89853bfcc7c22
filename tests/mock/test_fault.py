"""fail_nth: the counter's semantics, and a sweep that must unwind cleanly."""

from __future__ import annotations

from errno import ENOENT

import uapi_headers as u
from backends.mock import MockBackend
from backends.mock.fault import FaultInjector
from tests.mock.helpers import PAGE_SIZE, Fd, errno_of, fail_nth_sweep


def test_counter_semantics() -> None:
    f = FaultInjector()
    assert not f.should_fail("x")
    f.write(3)
    assert [f.should_fail("a"), f.should_fail("b")] == [False, False]
    assert f.read() == 1
    assert f.should_fail("c") and f.fired_at == "c" and f.read() == 0
    assert not f.should_fail("d")


def test_get_object_fails_with_enoent(be: MockBackend, fd: Fd) -> None:
    ioas = fd.ioas()
    be.fail_nth_write(1)
    assert errno_of(fd.unmap, ioas, 0, 4096) == ENOENT
    assert be.fail_nth_read() == 0


def _scenario(fd: Fd, buf: int, nth: int) -> None:
    """Like iommufd_fail_nth's chains: injection armed after the setup (0: never)."""
    ioas = fd.ioas()
    fd.test(u.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, memory_limit={"limit": 32})
    fd.be.fail_nth_write(nth)
    fd.mock_domain(ioas)
    iova = fd.map(ioas, buf, 16 * PAGE_SIZE)
    other = fd.ioas()
    fd.copy(other, ioas, iova, 8 * PAGE_SIZE, u.MOCK_APERTURE_START)
    access = fd.create_access(ioas)
    fd.access_pages(access, iova, 4 * PAGE_SIZE, buf)
    stdev2, _, _ = fd.mock_domain(other)
    fd.destroy(stdev2)
    fd.unmap(ioas, iova, 16 * PAGE_SIZE)


def test_sweep_unwinds_without_leaks() -> None:
    be = MockBackend()
    buf = be.alloc(16 * PAGE_SIZE)
    nth = fail_nth_sweep(be, lambda n: _scenario(Fd(be), buf, n), buf, 16 * PAGE_SIZE)
    assert nth > 20  # the scenario does walk many fault points
    fd = Fd(be)
    _scenario(fd, buf, 0)  # and still works without injection
    fd.close()
    be.shutdown()
