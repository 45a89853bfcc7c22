"""What a guest's pytest session imports, imported ahead of it (the agent's ``preload``).

Under TCG an import costs about ten times the host's: pytest, its built-in plugins,
the plugin proper (which imports the mock backend for its reports), the kernel
backend and the uAPI declarations take some 15 s in the guest. The agent imports
this module once (before a warm-start state is saved, see
:mod:`backends.qemu.snapshot`), and every session forked from it starts with all of
them loaded.
"""

from __future__ import annotations

import importlib
import pkgutil

import _pytest.config

#: pytest plugins beyond the default ones that a conftest may ask for (the project's
#: own tests/conftest.py asks for pytester)
EXTRA_PLUGINS = ("_pytest.pytester",)
#: the project's packages whose every module a session may import
PACKAGES = ("uapi_headers", "backends", "harness")
#: what a guest session never imports: the host's side of a guest, exploration
#: (hypothesis), reproducers, the command line, and the scenarios themselves (the
#: host ships the ones it runs)
SKIP = ("backends.qemu", "harness.explore", "harness.reproducer", "harness.cli",
        "harness.guestrun.host", "harness.scenarios")
#: the host-only packages' own names, for the check below
_HOST_PACKAGES = {"pexpect", "ptyprocess", "hypothesis", "vm_images", "xmlschema", "kcidb"}


def _load(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a host-only dependency may be missing; anything else is a broken runtime.
        if (exc.name or "").split(".")[0] not in _HOST_PACKAGES:
            raise


def _walk(package: str) -> list[str]:
    """``package`` and its modules, depth first, less SKIP (never imported to look in)."""
    if package in SKIP:
        return []
    module = importlib.import_module(package)
    names = [package]
    for info in pkgutil.iter_modules(getattr(module, "__path__", []), f"{package}."):
        if info.ispkg:
            names += _walk(info.name)
        elif info.name not in SKIP:
            names.append(info.name)
    return names


def preload() -> list[str]:
    """Import pytest's built-in plugins and the project's guest-side modules; their names."""
    names = [f"_pytest.{plugin}" for plugin in _pytest.config.default_plugins]
    names += EXTRA_PLUGINS
    for package in PACKAGES:
        names += _walk(package)
    for name in names:
        _load(name)
    return names


LOADED = preload()
