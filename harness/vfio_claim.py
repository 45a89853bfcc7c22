"""Claim VFIO test devices where a backend's ioctls run, and give them back.

On the ``kernel`` backend the devices are this host's: :mod:`backends.kernel.vfio_devices`
runs in this process. On a ``qemu:ARCH`` backend they are the guest's: the same module
runs in the guest (``python3 -m backends.kernel.vfio_devices``) through the backend's
``run``. Either way a claim first restores what a crashed earlier run left bound, then
checks every named device before the first driver is touched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from backends.contract import Backend
from backends.kernel import vfio_devices

#: QEMU's edu (the DMA engine of the DMA proof) and igb, as sysfs spells their ids
EDU = ("0x1234", "0x11e8")
IGB = ("0x8086", "0x10c9")
DEVICE_NAMES = {EDU: "edu", IGB: "igb"}


class ClaimRefused(RuntimeError):
    """A named device may not be used; the message is the one-line reason."""


@dataclass(frozen=True)
class ClaimedDevice:
    """A claimed device: where it is and its VFIO cdev."""

    bdf: str
    vendor: str
    device: str
    cdev: str

    @property
    def name(self) -> str:
        """``edu``, ``igb``, or the BDF for devices the tests do not know."""
        return DEVICE_NAMES.get((self.vendor, self.device), self.bdf)


def _devices(described: Sequence[dict[str, Any]]) -> list[ClaimedDevice]:
    found = []
    for entry in described:
        if not entry.get("vfio_cdev"):
            raise ClaimRefused(f"{entry['bdf']} is on {entry.get('driver')} with no VFIO cdev")
        found.append(ClaimedDevice(entry["bdf"], entry["vendor"], entry["device"],
                                entry["vfio_cdev"]))
    return found


class GuestRunner(Protocol):
    """A backend that runs commands in its guest (the qemu backends)."""

    spec: str

    def run(self, argv: Sequence[str], timeout: float = 600.0) -> tuple[int, bytes, bool]:
        """``(exit status, output, timed_out)`` of a command in the guest."""


def run_in_guest(backend: GuestRunner, args: Sequence[str], timeout: float = 120.0) -> Any:
    """``python3 -m backends.kernel.vfio_devices ARGS`` in the guest; its JSON.

    ClaimRefused with the guest's reason on exit status 3; RuntimeError otherwise.
    """
    code, output, timed_out = backend.run(["python3", "-m", "backends.kernel.vfio_devices", *args],
                                          timeout)
    text = output.decode("utf-8", "replace").strip()
    last = text.splitlines()[-1] if text else ""
    if code == 3:
        raise ClaimRefused(json.loads(last)["refused"])
    if code != 0 or timed_out:
        raise RuntimeError(f"vfio_devices {' '.join(args)} in {backend.spec}: exit {code}"
                           f"{' (timed out)' if timed_out else ''}: {text[-500:]}")
    return json.loads(last)


class Claim:
    """Devices claimed on one backend for a session; :meth:`release` gives them back."""

    def __init__(self, backend: Backend, bdfs: Sequence[str], *, allow_bind: bool) -> None:
        self.backend = backend
        self.remote = hasattr(backend, "run") and backend.spec.startswith("qemu:")
        self._bindings: list[vfio_devices.Binding] = []
        self.devices: list[ClaimedDevice] = []
        try:
            bdfs = [vfio_devices.normalize_bdf(b) for b in bdfs]
        except ValueError as exc:
            raise ClaimRefused(str(exc)) from None
        if self.remote:
            runner = cast(GuestRunner, backend)
            run_in_guest(runner, ["restore-pending"])
            flags = ["--allow-bind"] if allow_bind else []
            self.devices = _devices(run_in_guest(runner, ["claim", *bdfs, *flags]))
        else:
            vfio_devices.restore_pending()
            try:
                self._bindings = vfio_devices.claim(bdfs, allow_bind=allow_bind)
            except vfio_devices.DeviceRefused as exc:
                raise ClaimRefused(str(exc)) from None
            self.devices = _devices([vfio_devices.describe(b) for b in bdfs])

    def release(self) -> None:
        """Restore every original driver this claim replaced."""
        if self.remote:
            run_in_guest(cast(GuestRunner, self.backend), ["restore-pending"])
        else:
            while self._bindings:
                vfio_devices.restore(self._bindings.pop())
