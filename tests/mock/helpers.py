"""Small ioctl helpers for the mock backend's own unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uapi_headers as u
from backends.mock import MockBackend

PAGE_SIZE = 4096
RW = u.IOMMU_IOAS_MAP_READABLE | u.IOMMU_IOAS_MAP_WRITEABLE
FIXED = u.IOMMU_IOAS_MAP_FIXED_IOVA


def new(struct: str, **fields: Any) -> Any:
    """``struct <struct> *`` with size preset."""
    fields.setdefault("size", u.ffi.sizeof(f"struct {struct}"))
    return u.ffi.new(f"struct {struct} *", fields)


def errno_of(call: Any, *args: Any, **kwargs: Any) -> int:
    """The errno ``call(*args, **kwargs)`` fails with, 0 on success."""
    try:
        call(*args, **kwargs)
    except OSError as error:
        return error.errno or -1
    return 0


class Fd:
    """One open /dev/iommu on a MockBackend with the commands the tests need."""

    def __init__(self, be: MockBackend) -> None:
        self.be = be
        self.fd = be.open("/dev/iommu")

    @classmethod
    def on(cls, be: MockBackend, fd: int) -> Fd:
        """An iommufd already open as ``fd`` in ``be`` (a forked child's copy)."""
        opened = cls.__new__(cls)
        opened.be, opened.fd = be, fd
        return opened

    def ioctl(self, request: int, arg: Any = None) -> int:
        return self.be.ioctl(self.fd, request, arg)

    def test(self, op: int, obj_id: int = 0, **union: Any) -> Any:
        cmd = new("iommu_test_cmd", op=op, id=obj_id, **union)
        self.ioctl(u.IOMMU_TEST_CMD, cmd)
        return cmd

    def destroy(self, obj_id: int) -> None:
        self.ioctl(u.IOMMU_DESTROY, new("iommu_destroy", id=obj_id))

    def ioas(self) -> int:
        cmd = new("iommu_ioas_alloc")
        self.ioctl(u.IOMMU_IOAS_ALLOC, cmd)
        return int(cmd.out_ioas_id)

    def map(self, ioas: int, va: int, length: int, iova: int | None = None,
            flags: int = RW) -> int:
        cmd = new("iommu_ioas_map", ioas_id=ioas, user_va=va, length=length,
                  flags=flags | (FIXED if iova is not None else 0), iova=iova or 0)
        self.ioctl(u.IOMMU_IOAS_MAP, cmd)
        return int(cmd.iova)

    def map_file(self, ioas: int, mfd: int, start: int, length: int) -> int:
        cmd = new("iommu_ioas_map_file", ioas_id=ioas, fd=mfd, start=start,
                  length=length, flags=RW)
        self.ioctl(u.IOMMU_IOAS_MAP_FILE, cmd)
        return int(cmd.iova)

    def unmap(self, ioas: int, iova: int, length: int) -> int:
        cmd = new("iommu_ioas_unmap", ioas_id=ioas, iova=iova, length=length)
        self.ioctl(u.IOMMU_IOAS_UNMAP, cmd)
        return int(cmd.length)

    def copy(self, dst: int, src: int, src_iova: int, length: int,
             dst_iova: int | None = None) -> int:
        cmd = new("iommu_ioas_copy", dst_ioas_id=dst, src_ioas_id=src, src_iova=src_iova,
                  length=length, dst_iova=dst_iova or 0,
                  flags=RW | (FIXED if dst_iova is not None else 0))
        self.ioctl(u.IOMMU_IOAS_COPY, cmd)
        return int(cmd.dst_iova)

    def mock_domain(self, pt_id: int, dev_flags: int = 0) -> tuple[int, int, int]:
        """(stdev, hwpt, idev)"""
        if dev_flags:
            cmd = self.test(u.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, pt_id,
                            mock_domain_flags={"dev_flags": dev_flags})
        else:
            cmd = self.test(u.IOMMU_TEST_OP_MOCK_DOMAIN, pt_id)
        md = cmd.mock_domain
        return int(md.out_stdev_id), int(md.out_hwpt_id), int(md.out_idev_id)

    def replace(self, stdev: int, pt_id: int) -> int:
        cmd = self.test(u.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, stdev,
                        mock_domain_replace={"pt_id": pt_id})
        return int(cmd.mock_domain_replace.pt_id)

    def hwpt_alloc(self, idev: int, pt_id: int, flags: int = 0) -> int:
        cmd = new("iommu_hwpt_alloc", dev_id=idev, pt_id=pt_id, flags=flags)
        self.ioctl(u.IOMMU_HWPT_ALLOC, cmd)
        return int(cmd.out_hwpt_id)

    def check_map(self, hwpt: int, iova: int, va: int, length: int) -> None:
        self.test(u.IOMMU_TEST_OP_MD_CHECK_MAP, hwpt,
                  check_map={"iova": iova, "length": length, "uptr": va})

    def check_refs(self, va: int, length: int, refs: int) -> None:
        self.test(u.IOMMU_TEST_OP_MD_CHECK_REFS,
                  check_refs={"length": length, "uptr": va, "refs": refs})

    def add_reserved(self, ioas: int, start: int, length: int) -> None:
        self.test(u.IOMMU_TEST_OP_ADD_RESERVED, ioas,
                  add_reserved={"start": start, "length": length})

    def create_access(self, ioas: int, pin: bool = True) -> int:
        flags = u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES if pin else 0
        cmd = self.test(u.IOMMU_TEST_OP_CREATE_ACCESS, ioas, create_access={"flags": flags})
        return int(cmd.create_access.out_access_fd)

    def access_pages(self, access_fd: int, iova: int, length: int, uptr: int = 0) -> int:
        cmd = self.test(u.IOMMU_TEST_OP_ACCESS_PAGES, access_fd,
                        access_pages={"iova": iova, "length": length, "uptr": uptr})
        return int(cmd.access_pages.out_access_pages_id)

    def iova_ranges(self, ioas: int, capacity: int = 8) -> tuple[list[tuple[int, int]], int]:
        arr = self.be.alloc(16 * max(capacity, 1))
        cmd = new("iommu_ioas_iova_ranges", ioas_id=ioas, num_iovas=capacity,
                  allowed_iovas=arr)
        self.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)
        raw = self.be.peek(arr, 16 * int(cmd.num_iovas))
        out = [(int.from_bytes(raw[i:i + 8], "little"), int.from_bytes(raw[i + 8:i + 16], "little"))
               for i in range(0, len(raw), 16)]
        return out, int(cmd.out_iova_alignment)

    def close(self) -> None:
        self.be.close(self.fd)


def fail_nth_sweep(be: MockBackend, scenario: Callable[[int], None], buf: int,
                   length: int) -> int:
    """iommufd_fail_nth's loop on the mock: run ``scenario(nth)`` for nth = 1, 2, ...
    until the armed fault is no longer reached; after each run close every fd and
    require no pin left on ``[buf, buf+length)`` and no WARN. Returns the last nth."""
    nth = 1
    while True:
        try:
            scenario(nth)
        except OSError:
            pass
        fired = be.fail_nth_read() == 0
        be.fail_nth_write(0)
        for leftover in be.kernel.files.fds():
            be.close(leftover)
        checker = Fd(be)
        checker.check_refs(buf, length, 0)
        checker.close()
        assert be.warnings == [], (nth, be.kernel.fault.fired_at, be.warnings)
        if not fired:
            return nth
        nth += 1
        assert nth < 500
