"""The kernel's own iommufd and VFIO selftests, built statically from the kernel's tree.

tools/testing/selftests/iommu (``iommufd``, ``iommufd_fail_nth``) and, from
tools/testing/selftests/vfio, the programs that run against the guests' emulated
devices (``vfio_iommufd_setup_test``, ``vfio_dma_mapping_test``), compiled against the
uAPI headers of the very kernel build they will run on, and linked statically so the
guest needs no C library for them. They link libcap (iommu) and libuuid (vfio); the
static libraries and headers come from Debian's libcap-dev and uuid-dev for the target
architecture, unpacked privately, so a cross build needs no multiarch setup on the host.

Cache entry ``selftests/<key>``: the kernel's key (source contents, config, compiler),
the libcap-dev version and RECIPE.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vm_images.arch import Arch
from vm_images.cache import build_once, input_key
from vm_images.debian import GUEST_SUITES, AptConfig, unpacked
from vm_images.elf import MACHINES, ElfError, read_elf
from vm_images.kernel import KernelBuild
from vm_images.kernel_source import KernelSource
from vm_images.steps import Progress, Reporter

RECIPE = "selftests-2"
IOMMU_PROGRAMS = ("iommufd", "iommufd_fail_nth")
VFIO_PROGRAMS = ("vfio_iommufd_setup_test", "vfio_dma_mapping_test")
PROGRAMS = IOMMU_PROGRAMS + VFIO_PROGRAMS
LIBCAP_PACKAGE = "libcap-dev"
UUID_PACKAGE = "uuid-dev"


@dataclass(frozen=True)
class Selftests:
    """Static selftest binaries for one kernel build."""

    directory: Path          # holds PROGRAMS
    key: str
    log: Path

    @property
    def programs(self) -> list[Path]:
        """The binaries, in the order the guest runs them."""
        return [self.directory / name for name in PROGRAMS]


def build_selftests(arch: Arch, source: KernelSource, kernel: KernelBuild, *,
                    progress: Progress = print,
                    jobs: int | None = None) -> tuple[Selftests, bool]:
    """Static PROGRAMS for ``kernel``; ``(result, cache_hit)``."""
    report = Reporter(f"selftests {arch.name}", progress)
    apt = AptConfig(GUEST_SUITES, (arch.debian_arch,))
    libcap_deb, uuid_deb = apt.download(LIBCAP_PACKAGE), apt.download(UUID_PACKAGE)
    key = input_key([RECIPE, kernel.key, libcap_deb.name, uuid_deb.name])

    def build(entry: Path) -> dict[str, str]:
        out, log = entry / "bin", entry / "build.log"
        log.unlink(missing_ok=True)
        libs = (unpacked(libcap_deb), unpacked(uuid_deb))
        _compile(arch, source, kernel, libs, out, log, jobs, report)
        return {"directory": str(out), "log": str(log)}

    data, hit = build_once("selftests", key, build)
    result = Selftests(Path(data["directory"]), key, Path(data["log"]))
    if hit:
        report.say(f"cached: {result.directory}")
    return result, hit


def _compile(arch: Arch, source: KernelSource, kernel: KernelBuild, libs: tuple[Path, ...],
             out: Path, log: Path, jobs: int | None, report: Reporter) -> None:
    start = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # The Makefiles add their own flags to CFLAGS, so the extra include directories ride
    # on KHDR_INCLUDES (which they append) instead of replacing CFLAGS on the command line.
    includes = " ".join([f"-isystem {kernel.headers}",
                         *(f"-isystem {lib / 'usr/include'}" for lib in libs)])
    libdirs = " ".join(f"-L{lib / 'usr/lib' / arch.gnu_triplet}" for lib in libs)
    common = [f"-j{jobs or os.cpu_count() or 2}", f"OUTPUT={out}", f"ARCH={arch.kernel_arch}",
              f"KHDR_INCLUDES={includes}", f"LDFLAGS=-static {libdirs}"]
    if arch.cross_prefix:
        common.append(f"CROSS_COMPILE={arch.cross_prefix}")
    selftests = source.path / "tools/testing/selftests"
    report.run("make " + " ".join(IOMMU_PROGRAMS) + " (static)",
               ["make", "-C", str(selftests / "iommu"), *common], log)
    # Only the programs the guests' devices can run; the Makefile's default builds all.
    report.run("make " + " ".join(VFIO_PROGRAMS) + " (static)",
               ["make", "-C", str(selftests / "vfio"), *common,
                *(str(out / name) for name in VFIO_PROGRAMS)], log)
    for name in PROGRAMS:
        path = out / name
        if not path.is_file():
            raise report.fail(f"build {name}", log, f"{path} was not built")
        try:
            info = read_elf(path)
        except ElfError as e:
            raise report.fail(f"check {name}", log, str(e)) from e
        if info.machine != MACHINES[arch.name] or not info.is_static:
            raise report.fail(f"check {name}", log,
                              f"{path} is not a static {arch.name} program ({info})")
    # Only the programs go into the guest; object files and the like stay out.
    for leftover in out.iterdir():
        if leftover.name not in PROGRAMS:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    report.say(f"built {', '.join(PROGRAMS)} in {time.monotonic() - start:.0f} s")
