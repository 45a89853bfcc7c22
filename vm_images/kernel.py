"""Build a test kernel from a source tree and a config fragment, cached by its inputs.

Recipe (out of tree, ``O=`` a directory inside the cache entry):
  make tinyconfig; merge_config.sh -m FRAGMENT; make olddefconfig;
  check that every fragment option landed (vm_images.kconfig), else fail naming them;
  make -jN bzImage/Image; make headers (the uAPI headers the selftests compile against).

Cache entry: ``kernel/<slot key>`` where the slot key hashes RECIPE, the architecture,
the source's slot, the fragment's options (not its comments) and the compiler's
version. The entry is valid for the source identity recorded in its result; a local
tree that changed since is rebuilt in the same directory, incrementally.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm_images.arch import Arch
from vm_images.cache import cache_root, input_key
from vm_images.kconfig import ConfigMismatchError, read_config, verify_config
from vm_images.kernel_source import KernelSource
from vm_images.steps import Progress, Reporter, locked

#: Bump when the recipe changes in a way that changes its output.
RECIPE = "kernel-2"

# A fixed build user and host keep `uname -v` free of this machine's name.
BUILD_ENV = {"KBUILD_BUILD_USER": "iommufd-harness", "KBUILD_BUILD_HOST": "vm-images"}


@dataclass(frozen=True)
class KernelBuild:
    """A finished kernel build: what a guest boot and the selftests build need."""

    arch: str
    image: Path            # bzImage / Image
    config: Path           # the final .config
    build_dir: Path        # the O= directory (vmlinux for stack traces, usr/include)
    logs: Path             # directory of the build logs
    release: str           # `make kernelrelease`
    source: str            # KernelSource.description
    key: str               # changes with every input, the source's contents included
    seconds: float         # how long the (last) build took

    @property
    def headers(self) -> Path:
        """The exported uAPI headers of this build (``make headers``)."""
        return self.build_dir / "usr" / "include"


def compiler_version(arch: Arch) -> str:
    """First line of ``<prefix>gcc --version``; part of the cache key."""
    gcc = f"{arch.cross_prefix}gcc"
    try:
        out = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"{gcc} not usable ({e}); run vm_images/install_deps.sh") from e
    return out.stdout.splitlines()[0] if out.stdout else gcc


def fragment_options(fragment: Path) -> str:
    """The fragment's options in a canonical text form: the part of it that matters."""
    return "\n".join(f"{k}={v}" for k, v in read_config(fragment).items())


def slot_key(arch: Arch, source: KernelSource, options: str, compiler: str) -> str:
    """Where the build lives: every input except the contents of a local tree."""
    return input_key([RECIPE, arch.name, source.slot, options, compiler])


def kernel_key(slot: str, source: KernelSource) -> str:
    """Identifies the built kernel: the slot plus the source's contents."""
    return input_key([slot, source.identity])


def make_argv(arch: Arch, source: KernelSource, build: Path) -> list[str]:
    """``make`` with the tree, the O= directory, ARCH and (if cross) CROSS_COMPILE."""
    argv = ["make", "-C", str(source.path), f"O={build}", f"ARCH={arch.kernel_arch}"]
    if arch.cross_prefix:
        argv.append(f"CROSS_COMPILE={arch.cross_prefix}")
    return argv


def build_kernel(arch: Arch, source: KernelSource, *, fragment: Path | None = None,
                 progress: Progress = print, jobs: int | None = None) -> tuple[KernelBuild, bool]:
    """The kernel for ``arch`` from ``source``, built now or found in the cache.

    ``fragment`` defaults to the architecture's vm_images/configs/NAME.config.
    Returns ``(build, cache_hit)``.
    """
    fragment = fragment or arch.config_fragment
    report = Reporter(f"kernel {arch.name}", progress)
    slot = slot_key(arch, source, fragment_options(fragment), compiler_version(arch))
    key = kernel_key(slot, source)
    entry = cache_root() / "kernel" / slot
    result = entry / "result.json"
    found = _load(result, key)
    if found is not None:
        report.say(f"cached: {found.image} (Linux {found.release})")
        return found, True
    entry.mkdir(parents=True, exist_ok=True)
    with locked(entry / "lock"):
        found = _load(result, key)
        if found is not None:  # another process built it while we waited
            return found, True
        result.unlink(missing_ok=True)
        build = _build(arch, source, fragment, key, entry, jobs or os.cpu_count() or 2, report)
        tmp = result.with_suffix(".tmp")
        tmp.write_text(_to_json(build))
        os.replace(tmp, result)
        return build, False


def _build(arch: Arch, source: KernelSource, fragment: Path, key: str, entry: Path,
           jobs: int, report: Reporter) -> KernelBuild:
    start = time.monotonic()
    build, logs, out = entry / "build", entry / "logs", entry / "out"
    for d in (build, logs, out):
        d.mkdir(exist_ok=True)
    report.say(f"source {source.description}; build directory {build}")
    make = make_argv(arch, source, build)

    config_log = logs / "config.log"
    config_log.unlink(missing_ok=True)
    report.run("make tinyconfig", [*make, "tinyconfig"], config_log, env=BUILD_ENV)
    report.run(f"merge {fragment.name}",
               [str(source.path / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build),
                str(build / ".config"), str(fragment)], config_log, cwd=build, env=BUILD_ENV)
    report.run("make olddefconfig", [*make, "olddefconfig"], config_log, env=BUILD_ENV)
    try:
        verify_config(fragment, build / ".config")
    except ConfigMismatchError as e:
        raise report.fail("verify .config", config_log, str(e)) from e
    report.say(f"every option of {fragment.name} is in .config")

    report.run(f"make -j{jobs} {arch.make_target}", [*make, f"-j{jobs}", arch.make_target],
               logs / "kernel.log", env=BUILD_ENV)
    report.run("make headers", [*make, f"-j{jobs}", "headers"], logs / "headers.log",
               env=BUILD_ENV)

    image = out / Path(arch.image_path).name
    shutil.copy2(build / arch.image_path, image)
    config = out / "config"
    shutil.copy2(build / ".config", config)
    release = subprocess.run([*make, "-s", "kernelrelease"], capture_output=True, text=True,
                             check=True).stdout.strip()
    kb = KernelBuild(arch=arch.name, image=image, config=config, build_dir=build, logs=logs,
                     release=release, source=source.description, key=key,
                     seconds=round(time.monotonic() - start, 1))
    report.say(f"built {image} ({image.stat().st_size / 1e6:.1f} MB, Linux {release}) "
               f"in {kb.seconds:.0f} s")
    return kb


def _to_json(kb: KernelBuild) -> str:
    data: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v
                            for k, v in kb.__dict__.items()}
    return json.dumps(data, indent=1)


def _load(result: Path, key: str) -> KernelBuild | None:
    """The build recorded in ``result`` if it is complete and for exactly ``key``."""
    try:
        d = json.loads(result.read_text())
        if d["key"] != key:
            return None
        kb = KernelBuild(arch=d["arch"], image=Path(d["image"]), config=Path(d["config"]),
                         build_dir=Path(d["build_dir"]), logs=Path(d["logs"]),
                         release=d["release"], source=d["source"], key=d["key"],
                         seconds=float(d["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return kb if kb.image.is_file() else None
