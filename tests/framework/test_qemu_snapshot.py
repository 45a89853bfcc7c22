"""Warm starts (backends.qemu.snapshot): the key, saving over QMP, and a state that
does not restore (deleted, and the guest boots afresh). The real save and restore of
a guest are in test_qemu_guest.py's slow tests."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from backends.qemu import process, snapshot
from backends.qemu.backend import QemuBackend
from backends.qemu.snapshot import SnapshotError, SnapshotStore, state_key
from tests.framework.test_qemu_protocol import FakeLauncher


def test_the_key_ignores_the_sockets_and_follows_the_files(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"k" * 10)
    one, two = tmp_path / "a.sock", tmp_path / "b.sock"
    argv = ["qemu-system-x86_64", "-kernel", str(kernel), "-chardev", "socket,path={}"]
    first = state_key([w.format(one) for w in argv], [one])
    assert state_key([w.format(two) for w in argv], [two]) == first
    assert state_key([w.format(one) for w in argv] + ["-m", "4G"], [one]) != first
    kernel.write_bytes(b"k" * 11)  # a rebuilt kernel is a new state
    assert state_key([w.format(one) for w in argv], [one]) != first


class FakeQmp(threading.Thread):
    """A QMP server: answers the commands a save sends, writing the state on migrate."""

    def __init__(self, path: Path, migration: str = "completed") -> None:
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.migration = migration
        self.commands: list[str] = []

    def run(self) -> None:
        conn, _ = self.server.accept()
        stream = conn.makefile("rw", encoding="utf-8")
        stream.write(json.dumps({"QMP": {"version": {}}}) + "\n")
        stream.flush()
        for line in stream:
            request = json.loads(line)
            command = request["execute"]
            self.commands.append(command)
            reply: dict[str, Any] = {"return": {}}
            if command == "migrate":
                Path(request["arguments"]["uri"].removeprefix("file:")).write_bytes(b"RAM")
                stream.write(json.dumps({"event": "MIGRATION"}) + "\n")  # skipped
            elif command == "query-migrate":
                reply = {"return": {"status": self.migration}}
            stream.write(json.dumps(reply) + "\n")
            stream.flush()
        conn.close()


def test_save_writes_the_state_whole_and_lets_the_guest_run_on(tmp_path: Path) -> None:
    qmp = FakeQmp(tmp_path / "qmp.sock")
    qmp.start()
    store = SnapshotStore(tmp_path / "snapshots", "k1")
    assert not store.exists()
    store.save(tmp_path / "qmp.sock")
    qmp.join(5)
    assert qmp.commands == ["qmp_capabilities", "migrate", "query-migrate", "cont"]
    assert store.exists() and store.path.read_bytes() == b"RAM"
    assert not list(store.path.parent.glob("*.partial"))
    assert store.restore_args() == ["-incoming", f"file:{store.path}"]


def test_a_failed_migration_leaves_no_state(tmp_path: Path) -> None:
    qmp = FakeQmp(tmp_path / "qmp.sock", migration="failed")
    qmp.start()
    store = SnapshotStore(tmp_path / "snapshots", "k1")
    with pytest.raises(SnapshotError, match="migration failed"):
        store.save(tmp_path / "qmp.sock")
    assert not store.exists() and not list(store.path.parent.glob("*"))


def test_only_the_newest_states_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    for i in range(snapshot.KEEP + 2):
        old = SnapshotStore(root, f"old{i}")
        old.path.parent.mkdir(parents=True)
        old.path.write_bytes(b"x")
        os.utime(old.path, (1000 + i, 1000 + i))
    qmp = FakeQmp(tmp_path / "qmp.sock")
    qmp.start()
    SnapshotStore(root, "new").save(tmp_path / "qmp.sock")
    kept = sorted(p.parent.name for p in root.glob("*/state"))
    assert kept == sorted(["new"] + [f"old{i}" for i in range(3, snapshot.KEEP + 2)])


def test_the_switch_turns_warm_starts_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(snapshot.SNAPSHOT_ENV, "0")
    assert not snapshot.enabled()
    monkeypatch.setenv(snapshot.SNAPSHOT_ENV, "1")
    assert snapshot.enabled()


class SnapshotLauncher(FakeLauncher):
    """The stand-in QEMU, with warm starts under ``root`` (it refuses every state)."""

    def __init__(self, log_dir: Path, root: Path) -> None:
        super().__init__(log_dir)
        self.root = root

    def snapshot_store(self, argv: list[str], sockets: list[Path]) -> SnapshotStore:
        return SnapshotStore(self.root, state_key(argv, sockets))


def test_a_state_that_does_not_restore_is_deleted_and_the_guest_boots_afresh(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    launcher = SnapshotLauncher(tmp_path, tmp_path / "snapshots")
    store = launcher.snapshot_store(launcher.argv(tmp_path / "agent-1.sock"),
                                    [tmp_path / "agent-1.sock"])
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"not a guest")
    backend = QemuBackend("x86_64", launcher=launcher, call_timeout=5, boot_timeout=20)
    try:
        # Socket paths differ per backend: the key must not (the same state is found).
        assert "restored" not in backend._info and backend.boots == 1
        assert backend.kernel_release  # a cold boot answered
        fd = backend.open("/dev/iommu")
        backend.close(fd)
    finally:
        backend.shutdown()
    err = capsys.readouterr().err
    assert "did not restore" in err and "booting afresh" in err
    # The stand-in has no QMP: the fresh guest could not be saved either, and said so.
    assert "guest state not saved for warm starts" in err
    assert not store.exists()
    assert process.live_pids() == []
