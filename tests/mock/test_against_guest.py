"""The issue-9 bug scenarios, run on the mock and on the 7.3.4 x86_64 guest side by
side: the kernel's answers are the truth the mock's unit tests hard-code, so a change
on either side shows up here. Slow: it boots a TCG guest (``-m slow``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import uapi_headers as u
from backends import Backend, open_backend
from backends.mock import MockBackend
from tests.mock.helpers import PAGE_SIZE, RW, Fd, errno_of, new

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 is not installed"),
]

U64_MAX = (1 << 64) - 1
APERTURE = u.MOCK_APERTURE_START


def _mmap_and_fd_values(be: Backend) -> Any:
    mfd = be.memfd(2 * PAGE_SIZE)
    out = (errno_of(be.mmap, mfd, PAGE_SIZE, -PAGE_SIZE), errno_of(be.mmap, mfd, PAGE_SIZE, 1),
           errno_of(be.mmap, mfd, 0), errno_of(be.ftruncate, mfd, -1), errno_of(be.close, -1))
    be.close(mfd)
    return out


def _halves(fd: Fd) -> int:
    ioas = fd.ioas()
    buf = fd.be.alloc(PAGE_SIZE)
    fd.map(ioas, buf, 1 << 63, iova=0)
    fd.map(ioas, buf, 1 << 63, iova=1 << 63)
    return ioas


def _unmap_all_of_two_halves(fd: Fd) -> Any:
    cmd = new("iommu_ioas_unmap", ioas_id=_halves(fd), iova=0, length=U64_MAX)
    return errno_of(fd.ioctl, u.IOMMU_IOAS_UNMAP, cmd), int(cmd.length)


def _vfio_unmap_all_of_two_halves(fd: Fd) -> Any:
    fd.ioctl(u.IOMMU_VFIO_IOAS, new("iommu_vfio_ioas", op=u.IOMMU_VFIO_IOAS_SET,
                                    ioas_id=_halves(fd)))
    unmap = u.ffi.new("struct vfio_iommu_type1_dma_unmap *", {
        "argsz": u.ffi.sizeof("struct vfio_iommu_type1_dma_unmap"),
        "flags": u.VFIO_DMA_UNMAP_FLAG_ALL})
    return errno_of(fd.ioctl, u.VFIO_IOMMU_UNMAP_DMA, unmap), int(unmap.size)


def _syz_copy_near_the_top(fd: Fd) -> Any:
    src, dst = fd.ioas(), fd.ioas()
    top = U64_MAX + 1 - 2 * PAGE_SIZE
    fd.map(src, fd.be.alloc(PAGE_SIZE), PAGE_SIZE, iova=top)
    cmd = new("iommu_ioas_copy", dst_ioas_id=dst, src_ioas_id=src,
              src_iova=0xFFFFF000 << 32, length=PAGE_SIZE, flags=RW | u.MOCK_FLAGS_ACCESS_SYZ)
    copied = errno_of(fd.ioctl, u.IOMMU_IOAS_COPY, cmd)
    fd.unmap(src, top, PAGE_SIZE)
    return copied, errno_of(fd.destroy, src)


def _access_pages_unaligned_uptr(fd: Fd) -> Any:
    ioas = fd.ioas()
    buf = fd.be.alloc(2 * PAGE_SIZE)
    fd.map(ioas, buf, 2 * PAGE_SIZE, iova=APERTURE)
    access = fd.create_access(ioas)
    out = []
    for uptr in (buf + 1, buf + PAGE_SIZE + 1):
        try:
            item = fd.access_pages(access, APERTURE, PAGE_SIZE, uptr)
        except OSError as error:
            out.append(error.errno)
        else:
            out.append(0)
            fd.test(u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, access,
                    destroy_access_pages={"access_pages_id": item})
    fd.be.close(access)
    return out


def _replace_then_map_the_old_ioas(fd: Fd) -> Any:
    dst, src = fd.ioas(), fd.ioas()
    plain = fd.create_access(src, pin=False)
    pinning = fd.create_access(src, pin=True)
    fd.test(u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, pinning, access_replace_ioas={"ioas_id": dst})
    half = PAGE_SIZE // 2
    out = errno_of(fd.map, src, fd.be.alloc(PAGE_SIZE) + half, half, iova=APERTURE + half)
    fd.be.close(pinning)
    fd.be.close(plain)
    return out


def _on_fd(scenario: Callable[[Fd], Any]) -> Callable[[Backend], Any]:
    def run(be: Backend) -> Any:
        fd = Fd(be)  # type: ignore[arg-type]
        try:
            return scenario(fd)
        finally:
            fd.close()
    return run


SCENARIOS: dict[str, Callable[[Backend], Any]] = {
    "mmap_and_fd_values": _mmap_and_fd_values,
    "unmap_all_of_two_halves": _on_fd(_unmap_all_of_two_halves),
    "vfio_unmap_all_of_two_halves": _on_fd(_vfio_unmap_all_of_two_halves),
    "syz_copy_near_the_top": _on_fd(_syz_copy_near_the_top),
    "access_pages_unaligned_uptr": _on_fd(_access_pages_unaligned_uptr),
    "replace_then_map_the_old_ioas": _on_fd(_replace_then_map_the_old_ioas),
}


@pytest.fixture(scope="module")
def guest() -> Iterator[Backend]:
    be = open_backend("qemu:x86_64")
    yield be
    be.shutdown()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_mock_answers_as_the_guest(guest: Backend, name: str) -> None:
    mock = MockBackend()
    try:
        on_mock = SCENARIOS[name](mock)
        assert mock.take_splats() == []
    finally:
        mock.shutdown()
    assert on_mock == SCENARIOS[name](guest)
