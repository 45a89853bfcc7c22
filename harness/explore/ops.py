"""The operations differential exploration draws from: one table, open to more.

An :class:`Op` draws its parameters from the :class:`World` (the handles alive so far,
sometimes a bad one on purpose), issues its calls, and records what it created. It makes
no claim about the result: the lockstep backend underneath compares every call, so an
errno both sides agree on is just another outcome. New areas (HWPT nesting, PASIDs,
vIOMMU, dirty tracking) plug in with :func:`op` in their own module, declaring the
backend features they need: any module ``harness/explore/ops_*.py`` is imported by
:func:`available`, so a new area is one new file.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

import uapi_headers as u
from backends import Backend, Features
from harness.helpers.core import Iommufd, new_cmd
from harness.helpers.selftest import run_test_cmd

Draw = Any  # hypothesis' DataObject: data.draw(strategy)
BAD_ID = 0xFFFF  # an ID no object has (IDs are small), tried now and then


@dataclass
class World:
    """The handles alive in one exploration run (the caller's side of the pair)."""

    backend: Backend
    fd: Iommufd
    buffer: int
    buffer_pages: int
    memfd: int
    ioas: list[int] = field(default_factory=list)
    hwpts: list[int] = field(default_factory=list)
    devices: list[tuple[int, int, int]] = field(default_factory=list)  # stdev, hwpt, idev
    accesses: list[int] = field(default_factory=list)                  # access fds
    pages: list[tuple[int, int]] = field(default_factory=list)         # access fd, pages id
    maps: list[tuple[int, int, int]] = field(default_factory=list)     # ioas, iova, length

    @property
    def page(self) -> int:
        """The backend's page size."""
        return self.backend.page_size

    def pick(self, data: Draw, items: list[Any], bad: Any = BAD_ID) -> Any:
        """One of ``items``, or now and then (always when there are none) ``bad``."""
        if not items or data.draw(st.integers(0, 15), label="bad?") == 0:
            return bad
        return data.draw(st.sampled_from(items))

    def object_ids(self) -> list[int]:
        """Every object ID alive (for DESTROY)."""
        return self.ioas + self.hwpts + [d[0] for d in self.devices]

    def forget(self, object_id: int) -> None:
        """Drop a destroyed object from every list."""
        self.ioas = [i for i in self.ioas if i != object_id]
        self.hwpts = [h for h in self.hwpts if h != object_id]
        self.devices = [d for d in self.devices if d[0] != object_id]
        self.maps = [m for m in self.maps if m[0] != object_id]

    def close(self) -> None:
        """Close every access fd and the iommufd (the kernel destroys the rest)."""
        for access in self.accesses:
            self.backend.close(access)
        self.accesses.clear()
        self.fd.close()


@dataclass(frozen=True)
class Op:
    """One kind of operation: ``run(world, data)``, offered when ``ready(world)``."""

    name: str
    run: Callable[[World, Draw], None]
    requires: tuple[str, ...] = ()
    ready: Callable[[World], bool] = lambda world: True

    def __repr__(self) -> str:
        return self.name


OPS: list[Op] = []


def op(name: str, *, requires: tuple[str, ...] = (),
       ready: Callable[[World], bool] = lambda world: True
       ) -> Callable[[Callable[[World, Draw], None]], Callable[[World, Draw], None]]:
    """Register an operation in :data:`OPS`."""
    def register(run: Callable[[World, Draw], None]) -> Callable[[World, Draw], None]:
        OPS.append(Op(name, run, requires, ready))
        return run
    return register


def load_areas() -> None:
    """Import every ``harness.explore.ops_*`` module (each registers its operations)."""
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        if info.name.startswith("ops_"):
            importlib.import_module(f"harness.explore.{info.name}")


def available(backend: Backend) -> list[Op]:
    """The operations ``backend`` has every feature for (after :func:`load_areas`)."""
    load_areas()
    return [o for o in OPS if backend.has(*o.requires)]


@contextmanager
def errno_ok() -> Iterator[None]:
    """An errno is an outcome like any other here (the lockstep backend compared it)."""
    try:
        yield
    except OSError:
        pass


# -- drawing values ------------------------------------------------------------
_APERTURE = u.MOCK_APERTURE_START


def draw_iova(world: World, data: Draw) -> int:
    """An IOVA: mostly page-aligned inside the mock aperture, sometimes odd or outside."""
    base = data.draw(st.sampled_from([_APERTURE, 0, _APERTURE + (1 << 20), 1 << 32]))
    offset = data.draw(st.integers(0, 63)) * world.page
    if data.draw(st.integers(0, 15)) == 0:
        offset += data.draw(st.sampled_from([1, 512, 2048]))
    return int(base + offset)


def draw_span(world: World, data: Draw) -> tuple[int, int]:
    """``(offset, length)`` inside the shared buffer, mostly whole pages."""
    first = data.draw(st.integers(0, world.buffer_pages - 1))
    count = data.draw(st.integers(1, world.buffer_pages - first))
    length = count * world.page
    if data.draw(st.integers(0, 15)) == 0:
        length = data.draw(st.sampled_from([0, 1, world.page - 1, length + 1]))
    return first * world.page, length


def draw_map(world: World, data: Draw) -> tuple[int, int, int]:
    """A mapping made earlier (or a made-up one)."""
    bad = (world.pick(data, world.ioas), draw_iova(world, data), world.page)
    result: tuple[int, int, int] = world.pick(data, world.maps, bad)
    return result


_MAP_FLAGS = [u.IOMMU_IOAS_MAP_READABLE | u.IOMMU_IOAS_MAP_WRITEABLE,
              u.IOMMU_IOAS_MAP_READABLE, u.IOMMU_IOAS_MAP_WRITEABLE, 0]


# -- IOAS ----------------------------------------------------------------------
@op("ioas_alloc")
def ioas_alloc(world: World, data: Draw) -> None:
    with errno_ok():
        world.ioas.append(world.fd.ioas_alloc())


def _map_flags(world: World, data: Draw) -> tuple[int, int]:
    flags = data.draw(st.sampled_from(_MAP_FLAGS))
    iova = 0
    if data.draw(st.booleans()):
        flags |= u.IOMMU_IOAS_MAP_FIXED_IOVA
        iova = draw_iova(world, data)
    return flags, iova


@op("ioas_map")
def ioas_map(world: World, data: Draw) -> None:
    ioas = world.pick(data, world.ioas)
    offset, length = draw_span(world, data)
    flags, iova = _map_flags(world, data)
    cmd = new_cmd("iommu_ioas_map", {"ioas_id": ioas, "flags": flags, "iova": iova,
                                     "user_va": world.buffer + offset, "length": length})
    with errno_ok():
        world.fd.ioctl(u.IOMMU_IOAS_MAP, cmd)
        world.maps.append((ioas, int(cmd.iova), length))


@op("ioas_map_file", requires=(Features.MEMFD,))
def ioas_map_file(world: World, data: Draw) -> None:
    ioas = world.pick(data, world.ioas)
    offset, length = draw_span(world, data)
    flags, iova = _map_flags(world, data)
    cmd = new_cmd("iommu_ioas_map_file", {"ioas_id": ioas, "flags": flags, "iova": iova,
                                          "fd": world.memfd, "start": offset,
                                          "length": length})
    with errno_ok():
        world.fd.ioctl(u.IOMMU_IOAS_MAP_FILE, cmd)
        world.maps.append((ioas, int(cmd.iova), length))


@op("ioas_copy")
def ioas_copy(world: World, data: Draw) -> None:
    src, src_iova, length = draw_map(world, data)
    dst = world.pick(data, world.ioas)
    flags, iova = _map_flags(world, data)
    cmd = new_cmd("iommu_ioas_copy", {"dst_ioas_id": dst, "src_ioas_id": src, "flags": flags,
                                      "length": length, "src_iova": src_iova,
                                      "dst_iova": iova})
    with errno_ok():
        world.fd.ioctl(u.IOMMU_IOAS_COPY, cmd)
        world.maps.append((dst, int(cmd.dst_iova), length))


@op("ioas_unmap")
def ioas_unmap(world: World, data: Draw) -> None:
    ioas, iova, length = draw_map(world, data)
    if data.draw(st.integers(0, 7)) == 0:
        iova, length = 0, (1 << 64) - 1  # unmap everything
    cmd = new_cmd("iommu_ioas_unmap", {"ioas_id": ioas, "iova": iova, "length": length})
    with errno_ok():
        world.fd.ioctl(u.IOMMU_IOAS_UNMAP, cmd)
        world.maps = [m for m in world.maps
                      if m[0] != ioas or m[1] + m[2] <= iova or m[1] >= iova + length]


@op("ioas_iova_ranges")
def ioas_iova_ranges(world: World, data: Draw) -> None:
    count = data.draw(st.integers(0, 3))
    # The ranges land in the last page of the buffer (compared after the call).
    cmd = new_cmd("iommu_ioas_iova_ranges", {
        "ioas_id": world.pick(data, world.ioas), "num_iovas": count,
        "allowed_iovas": world.buffer + (world.buffer_pages - 1) * world.page})
    with errno_ok():
        world.fd.ioctl(u.IOMMU_IOAS_IOVA_RANGES, cmd)


@op("ioas_allow_iovas")
def ioas_allow_iovas(world: World, data: Draw) -> None:
    count = data.draw(st.integers(0, 2))
    scratch = world.buffer + (world.buffer_pages - 1) * world.page
    ranges = b""
    for _ in range(count):
        start = draw_iova(world, data)
        ranges += start.to_bytes(8, "little") + (start + 16 * world.page - 1).to_bytes(8, "little")
    if ranges:
        world.backend.poke(scratch, ranges)
    cmd = new_cmd("iommu_ioas_allow_iovas", {"ioas_id": world.pick(data, world.ioas),
                                             "num_iovas": count, "allowed_iovas": scratch})
    with errno_ok():
        world.fd.ioctl(u.IOMMU_IOAS_ALLOW_IOVAS, cmd)


@op("destroy")
def destroy(world: World, data: Draw) -> None:
    victim = world.pick(data, world.object_ids())
    with errno_ok():
        world.fd.destroy(victim)
        world.forget(victim)


# -- selftest mock devices, HWPTs, attach/replace --------------------------------------
@op("mock_domain", requires=(Features.SELFTEST,))
def mock_domain(world: World, data: Draw) -> None:
    pt = world.pick(data, world.ioas + world.hwpts)
    with errno_ok():
        cmd = run_test_cmd(world.fd, u.IOMMU_TEST_OP_MOCK_DOMAIN, pt)
        dev = (int(cmd.mock_domain.out_stdev_id), int(cmd.mock_domain.out_hwpt_id),
               int(cmd.mock_domain.out_idev_id))
        world.devices.append(dev)
        if dev[1] not in world.hwpts and dev[1] not in world.ioas:
            world.hwpts.append(dev[1])


@op("mock_domain_replace", requires=(Features.SELFTEST,))
def mock_domain_replace(world: World, data: Draw) -> None:
    dev = world.pick(data, world.devices, (BAD_ID, 0, 0))
    pt = world.pick(data, world.ioas + world.hwpts)
    with errno_ok():
        run_test_cmd(world.fd, u.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, dev[0],
                     mock_domain_replace={"pt_id": pt})


@op("hwpt_alloc", requires=(Features.SELFTEST,))
def hwpt_alloc(world: World, data: Draw) -> None:
    dev = world.pick(data, world.devices, (0, 0, BAD_ID))
    flags = data.draw(st.sampled_from([0, u.IOMMU_HWPT_ALLOC_NEST_PARENT,
                                       u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING]))
    cmd = new_cmd("iommu_hwpt_alloc", {"dev_id": dev[2], "flags": flags,
                                       "pt_id": world.pick(data, world.ioas)})
    with errno_ok():
        world.fd.ioctl(u.IOMMU_HWPT_ALLOC, cmd)
        world.hwpts.append(int(cmd.out_hwpt_id))


@op("check_refs", requires=(Features.SELFTEST,))
def check_refs(world: World, data: Draw) -> None:
    """MD_CHECK_REFS over the whole buffer: both sides must count the same pins."""
    refs = data.draw(st.integers(0, 2))
    with errno_ok():
        run_test_cmd(world.fd, u.IOMMU_TEST_OP_MD_CHECK_REFS,
                     check_refs={"length": world.buffer_pages * world.page,
                                 "uptr": world.buffer, "refs": refs})


# -- accesses: pins and CPU reads/writes -----------------------------------------------
@op("create_access", requires=(Features.SELFTEST,))
def create_access(world: World, data: Draw) -> None:
    flags = data.draw(st.sampled_from([0, u.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES]))
    with errno_ok():
        cmd = run_test_cmd(world.fd, u.IOMMU_TEST_OP_CREATE_ACCESS,
                           world.pick(data, world.ioas), create_access={"flags": flags})
        world.accesses.append(int(cmd.create_access.out_access_fd))


@op("access_pages", requires=(Features.SELFTEST,), ready=lambda w: bool(w.accesses))
def access_pages(world: World, data: Draw) -> None:
    access = data.draw(st.sampled_from(world.accesses))
    _, iova, length = draw_map(world, data)
    flags = data.draw(st.sampled_from([0, u.MOCK_FLAGS_ACCESS_WRITE]))
    with errno_ok():
        cmd = run_test_cmd(world.fd, u.IOMMU_TEST_OP_ACCESS_PAGES, access, access_pages={
            "flags": flags, "iova": iova, "length": length, "uptr": world.buffer})
        world.pages.append((access, int(cmd.access_pages.out_access_pages_id)))


@op("destroy_access_pages", requires=(Features.SELFTEST,), ready=lambda w: bool(w.pages))
def destroy_access_pages(world: World, data: Draw) -> None:
    access, pages = data.draw(st.sampled_from(world.pages))
    with errno_ok():
        run_test_cmd(world.fd, u.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, access,
                     destroy_access_pages={"access_pages_id": pages})
        world.pages.remove((access, pages))


@op("access_rw", requires=(Features.SELFTEST,), ready=lambda w: bool(w.accesses))
def access_rw(world: World, data: Draw) -> None:
    access = data.draw(st.sampled_from(world.accesses))
    _, iova, _ = draw_map(world, data)
    iova += data.draw(st.integers(0, 64))
    length = data.draw(st.sampled_from([1, 8, 100, world.page, world.page + 3]))
    flags = data.draw(st.sampled_from([0, u.MOCK_ACCESS_RW_WRITE, u.MOCK_ACCESS_RW_SLOW_PATH,
                                       u.MOCK_ACCESS_RW_WRITE | u.MOCK_ACCESS_RW_SLOW_PATH]))
    # The CPU side of the access: the second to last page of the buffer.
    uptr = world.buffer + (world.buffer_pages - 2) * world.page
    with errno_ok():
        run_test_cmd(world.fd, u.IOMMU_TEST_OP_ACCESS_RW, access, access_rw={
            "iova": iova, "length": length, "uptr": uptr, "flags": flags})


@op("access_replace_ioas", requires=(Features.SELFTEST,), ready=lambda w: bool(w.accesses))
def access_replace_ioas(world: World, data: Draw) -> None:
    access = data.draw(st.sampled_from(world.accesses))
    with errno_ok():
        run_test_cmd(world.fd, u.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, access,
                     access_replace_ioas={"ioas_id": world.pick(data, world.ioas)})


@op("close_access", requires=(Features.SELFTEST,), ready=lambda w: bool(w.accesses))
def close_access(world: World, data: Draw) -> None:
    access = data.draw(st.sampled_from(world.accesses))
    world.accesses.remove(access)
    world.pages = [p for p in world.pages if p[0] != access]
    world.backend.close(access)


# -- fault injection ------------------------------------------------------------------
@op("fail_nth", requires=(Features.FAIL_NTH,))
def fail_nth(world: World, data: Draw) -> None:
    """Fault N armed over an IOAS alloc and map in a context of its own; after the
    read-back the context is closed, and both sides must be left consistent: no
    page of the buffer still pinned."""
    nth = data.draw(st.integers(1, 12))
    scratch = Iommufd.open(world.backend)
    backend = world.backend
    try:
        backend.fail_nth_write(nth)
        with errno_ok():
            ioas = scratch.ioas_alloc()
            scratch.ioctl(u.IOMMU_IOAS_MAP, new_cmd("iommu_ioas_map", {
                "ioas_id": ioas, "user_va": world.buffer, "length": world.page,
                "flags": _MAP_FLAGS[0]}))
    finally:
        backend.fail_nth_read()
        backend.fail_nth_write(0)
        scratch.close()
    if backend.has(Features.SELFTEST):
        # The world's own domains may pin that page too (EIO on both sides then): the
        # pair compares the outcome, so a leak on one side still shows as a divergence.
        with errno_ok():
            run_test_cmd(world.fd, u.IOMMU_TEST_OP_MD_CHECK_REFS, check_refs={
                "length": world.page, "uptr": world.buffer, "refs": 0})


def open_world(backend: Backend, buffer: int, buffer_pages: int, memfd: int) -> World:
    """A fresh iommufd over the shared buffer and memfd."""
    return World(backend, Iommufd(backend, backend.open("/dev/iommu", os.O_RDWR)),
                 buffer, buffer_pages, memfd)
