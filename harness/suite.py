"""Where the iommufd scenario suite is, in a source checkout and in an installed wheel.

The repository keeps the suite in tests/iommufd (its source of truth). The wheel ships
the same directory as the package ``harness.scenarios`` (pyproject's ``package-dir``
maps it: no copy, no symlink, no build step), inside the framework's own namespace, so
it installs with the framework it belongs to and takes no top-level name such as
``tests`` that other distributions also use. ``iommufd-harness run`` finds it here.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: tests/iommufd of a source checkout (editable installs and the repository itself)
CHECKOUT_DIR = HERE.parent / "tests" / "iommufd"
#: the suite as the wheel installs it
INSTALLED_DIR = HERE / "scenarios"
PACKAGE = "harness.scenarios"


class SuiteMissing(Exception):
    """Neither a checkout's tests/iommufd nor the installed package is there."""


def location() -> tuple[Path, bool]:
    """The suite's directory, and whether it is the installed copy (not a checkout)."""
    if CHECKOUT_DIR.is_dir():
        return CHECKOUT_DIR, False
    if (INSTALLED_DIR / "__init__.py").is_file():
        return INSTALLED_DIR, True
    raise SuiteMissing(f"the iommufd suite is neither at {CHECKOUT_DIR} nor at "
                       f"{INSTALLED_DIR}; reinstall iommufd-harness")


def pytest_args() -> list[str]:
    """The pytest arguments that run the suite from any working directory.

    An installed suite gets its own rootdir and no ini file (so a pytest configuration
    in the current directory does not apply to it), and pytest's cache goes to the
    project's cache directory instead of site-packages.
    """
    directory, installed = location()
    if not installed:
        return [str(directory)]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    cache = Path(base) / "iommufd-harness" / "pytest-cache"
    return [str(directory), "--rootdir", str(directory), "-c", os.devnull,
            "-o", f"cache_dir={cache}"]
