"""Warm starts: a booted guest saved once, restored in well under a second.

Under TCG a cold boot to an agent with pytest and the harness imported costs tens of
seconds (the kernel's boot, then Python imports at a tenth of the host's speed). The
first boot of an image saves the guest right after its agent has answered ``hello``
and imported :data:`PRELOAD`: QEMU's live migration to a file (``migrate file:``),
taken from a running guest so that the restored one runs at once. Every later boot
of the same command line starts QEMU with ``-incoming file:STATE`` instead.

The state is a cache (``$XDG_CACHE_HOME/iommufd-harness/snapshots/KEY``), keyed by
the command line (socket paths aside), the size and mtime of every file it names and
of the QEMU binary, and the preload list: a change to any of them is a new key. It is
never a correctness input: a state that does not restore is deleted and the guest is
booted afresh. ``IOMMUFD_QEMU_SNAPSHOT=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.kernel.rpc.protocol import PROTOCOL_VERSION

#: env switch: "0" boots every guest cold
SNAPSHOT_ENV = "IOMMUFD_QEMU_SNAPSHOT"
#: guest modules the agent imports before the state is saved, so that a restored
#: guest's forked jobs start with them loaded (named, not imported, here: the guest
#: runner lives in harness, above this package)
PRELOAD = ("harness.guestrun.preload",)
#: saved states kept per cache (the newest); one is about 170 MB
KEEP = 4
_MIGRATE_TIMEOUT = 120.0
_POLL = 0.05


class SnapshotError(Exception):
    """A state could not be saved (QMP refused, migration failed or timed out)."""


def enabled() -> bool:
    """False when $IOMMUFD_QEMU_SNAPSHOT is "0"."""
    return os.environ.get(SNAPSHOT_ENV, "1").strip() != "0"


def _stat_token(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def state_key(argv: Sequence[str], sockets: Sequence[Path]) -> str:
    """The cache key of a guest booted by ``argv`` whose ``sockets`` change per boot."""
    names = {str(path): f"<socket{i}>" for i, path in enumerate(sockets)}
    words = []
    for word in argv:
        for real, placeholder in names.items():
            word = word.replace(real, placeholder)
        words.append(word)
    binary = shutil.which(argv[0]) or argv[0]
    files = {word: _stat_token(word) for word in words if word.startswith("/")}
    blob = json.dumps({"argv": words, "files": files, "qemu": [binary, _stat_token(binary)],
                       "preload": PRELOAD, "protocol": PROTOCOL_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def qmp_args(path: Path) -> list[str]:
    """QEMU arguments for a QMP monitor on the unix socket ``path``."""
    return ["-qmp", f"unix:{path},server=on,wait=off"]


class Qmp:
    """A minimal QMP client: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rw", encoding="utf-8")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise SnapshotError("QMP connection closed")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; its ``return`` value, or SnapshotError with QEMU's error."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._file.write(json.dumps(request) + "\n")
        self._file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise SnapshotError(f"QMP {command}: {reply['error'].get('desc', reply)}")
            return reply.get("return")

    def close(self) -> None:
        """Disconnect (QEMU keeps running)."""
        self._file.close()
        self._sock.close()


class SnapshotStore:
    """The saved state of one guest command line (see the module docstring)."""

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.key = key
        self.path = root / key / "state"

    def exists(self) -> bool:
        """True when a saved state is there to restore."""
        return self.path.is_file()

    def restore_args(self) -> list[str]:
        """QEMU arguments that start the guest from the saved state."""
        return ["-incoming", f"file:{self.path}"]

    def discard(self) -> None:
        """Delete the saved state (it did not restore)."""
        shutil.rmtree(self.path.parent, ignore_errors=True)

    def save(self, qmp_path: Path) -> float:
        """Save the running guest behind ``qmp_path`` and let it run on; the seconds taken.

        The state is written beside its final name and renamed once complete, so a
        concurrent run (pytest-xdist workers) never restores half a file.
        """
        started = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"state.{os.getpid()}.partial")
        qmp = Qmp(qmp_path)
        try:
            qmp.execute("migrate", uri=f"file:{partial}")
            deadline = started + _MIGRATE_TIMEOUT
            while True:
                status = qmp.execute("query-migrate").get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled") or time.monotonic() > deadline:
                    raise SnapshotError(f"saving the guest: migration {status}")
                time.sleep(_POLL)
            # The source pauses once migrated; this guest goes on serving the run.
            qmp.execute("cont")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            qmp.close()
        os.replace(partial, self.path)
        self._prune()
        return time.monotonic() - started

    def _prune(self) -> None:
        """Keep the newest KEEP states (old images' states are dead weight)."""
        states = sorted((p for p in self.root.glob("*/state") if p.is_file()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for old in states[KEEP:]:
            shutil.rmtree(old.parent, ignore_errors=True)
