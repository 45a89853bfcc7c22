"""Build a C reproducer as the guest's C selftests are built: statically, with the same
compiler, against the uapi headers of the very kernel build the guest boots."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vm_images.arch import get_arch
from vm_images.kernel import build_kernel
from vm_images.kernel_source import debian_source


class BuildError(RuntimeError):
    """The reproducer did not compile: the compiler's message."""


def build_reproducer(source: Path, arch: str = "x86_64", output: Path | None = None) -> Path:
    """Compile ``source`` into a static program for ``arch``; its path.

    The kernel tree and its build come from the image cache (``vm build`` made them),
    so this is a cache hit once the guest image exists.
    """
    target = get_arch(arch)
    tree = debian_source()
    kernel, _ = build_kernel(target, tree, progress=lambda _line: None)
    output = output or source.with_suffix(f".{arch}")
    argv = [f"{target.cross_prefix}gcc", "-static", "-O2", "-Wall",
            "-isystem", str(kernel.headers),
            "-I", str(tree.path / "drivers/iommu/iommufd"),
            "-o", str(output), str(source)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv)}:\n{done.stderr.strip()}")
    return output
