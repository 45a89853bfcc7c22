"""fail_nth points per scenario on each backend, beside the kernel's own C binary.

With ``--iommufd-fail-nth-kselftest``, every sweep also counts the faults injected during it per
kernel fault attribute (``failslab``, ``fail_page_alloc``, ``fail_iommufd``, ...), and
the run ends with a table: per scenario, the points swept on each backend and, for each
guest, the points the kernel's C ``iommufd_fail_nth`` sweeps for the same scenario in
that same guest.

How the C binary's points are counted: it prints no iteration count, so it runs once per
scenario (``-t NAME``) under ``python3 -m backends.kernel.faultinject count``, which
raises every fault attribute's debugfs ``times`` for the run: each injected fault (the
fail-nth ones included) lowers it by one, so the drop is the number of iterations whose
fault fired, i.e. the points the C loop swept. The Python sweeps in a guest are counted
the same way (``faultinject tally`` before and after), and on the mock by the model's own
per-attribute tally, so all columns count the same thing.

The totals are exact; the per-attribute split of a whole-scenario sweep is not quite:
each run injects its N-th point, and the kernel's slab and page allocations vary a
little from run to run (a slab refill, an xarray node), so a point can shift by one
between runs. Measured step by step (one sweep per ioctl of map_domain on 7.3.4), the
kernel's fail_iommufd points were 2 / 20 / 0 / 21 per step, the mock's the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pytest

from backends.contract import Backend, BackendError
from backends.mock import MockBackend
from harness import fail_nth_plugin

C_BINARY = "/selftests/iommufd_fail_nth"
C_FIXTURE = "basic_fail_nth"
FAULTINJECT = ("python3", "-m", "backends.kernel.faultinject")
#: column abbreviations of the kernel's fault attributes
_SHORT = {"failslab": "slab", "fail_page_alloc": "page", "fail_iommufd": "iommufd"}

_GUESTS = pytest.StashKey[dict[str, "GuestRunner"]]()


class GuestRunner(Protocol):
    """What the lineup needs beyond the contract: running a command in the guest
    (:meth:`backends.qemu.QemuBackend.run`)."""

    spec: str

    def run(self, argv: Sequence[str], timeout: float = ...) -> tuple[int, bytes, bool]: ...


def register(config: pytest.Config) -> None:
    """Hook the tally into the sweeps and the table into the summary, when asked."""
    if not config.getoption("iommufd_fail_nth_kselftest"):
        return
    guests: dict[str, GuestRunner] = {}
    config.stash[_GUESTS] = guests
    config.stash[fail_nth_plugin.TALLY] = _tally_recording(guests)
    config.pluginmanager.register(_Summary(config), "iommufd-fail-nth-lineup")


def _guest_json(guest: GuestRunner, args: Sequence[str], timeout: float = 600.0) -> Any:
    code, output, timed_out = guest.run([*FAULTINJECT, *args], timeout)
    text = output.decode("utf-8", "replace").strip()
    if code != 0 or timed_out:
        raise BackendError(f"{guest.spec}: faultinject {args[0]} failed: {text[-300:]}")
    return json.loads(text.splitlines()[-1])


def tally(backend: Backend) -> dict[str, int] | None:
    """Faults injected so far per fault attribute on ``backend`` (None: cannot tell)."""
    if isinstance(backend, MockBackend):
        return dict(backend.kernel.fault.injected)
    if callable(getattr(backend, "run", None)):
        counts: dict[str, int] = _guest_json(backend, ["tally"])  # type: ignore[arg-type]
        return counts
    return None


def _tally_recording(guests: dict[str, GuestRunner]) -> Callable[[Backend], Any]:
    def counting(backend: Backend) -> dict[str, int] | None:
        if callable(getattr(backend, "run", None)):
            guests[backend.spec] = backend  # type: ignore[assignment]
        return tally(backend)
    return counting


def count_c_scenario(guest: GuestRunner, test: str) -> tuple[int, dict[str, int], str]:
    """Run the C binary's scenario ``test`` in ``guest``: (points, per attribute, result)."""
    result = _guest_json(guest, ["count", "--", C_BINARY, "-t", test])
    output = str(result["output"])
    name = f"{C_FIXTURE}.{test}"
    verdict = ("ok" if f"ok 1 {name}" in output and "not ok" not in output
               else "not ok" if "not ok" in output else "?")
    return int(result["total"]), dict(result["injected"]), verdict


def _cell(points: int | None, injected: dict[str, int] | None) -> str:
    if points is None:
        return "-"
    if not injected:
        return str(points)
    parts = [f"{_SHORT.get(name, name)} {count}" for name, count in injected.items() if count]
    return f"{points} ({', '.join(parts)})" if parts else str(points)


class _Summary:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        sweeps = fail_nth_plugin.sweeps(self.config)
        if not sweeps:
            return
        backends = list(dict.fromkeys(s.backend for s in sweeps))
        guests = self.config.stash[_GUESTS]
        names = list(dict.fromkeys(s.name for s in sweeps))
        rows = [["scenario", *backends, *(f"C in {spec}" for spec in guests)]]
        by_key = {(s.name, s.backend): s for s in sweeps}
        for name in names:
            row = [name]
            for spec in backends:
                sweep = by_key.get((name, spec))
                row.append(_cell(sweep.points if sweep else None,
                                 sweep.injected if sweep else None))
            for guest in guests.values():
                row.append(self._c_cell(guest, name))
            rows.append(row)
        terminalreporter.section("fail_nth points swept, beside the kernel's C iommufd_fail_nth")
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths,
                                                                              strict=True)))
        terminalreporter.write_line(
            "(in brackets: faults injected per kernel fault attribute, counted from debugfs "
            "fail*/times in guests and by the model on the mock)")

    @staticmethod
    def _c_cell(guest: GuestRunner, name: str) -> str:
        fixture, _, test = name.partition(".")
        if fixture != C_FIXTURE:
            return "-"
        try:
            points, injected, verdict = count_c_scenario(guest, test)
        except (BackendError, OSError, ValueError, KeyError) as error:
            return f"error: {str(error).splitlines()[0][:60]}"
        return f"{_cell(points, injected)} {verdict}"

