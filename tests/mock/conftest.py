"""Fixtures for the mock backend's unit tests: a fresh model per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends.mock import MockBackend
from tests.mock.helpers import Fd


@pytest.fixture
def be() -> Iterator[MockBackend]:
    """A fresh mock kernel; the test fails if the model hit a WARN_ON."""
    backend = MockBackend()
    yield backend
    backend.shutdown()
    assert backend.warnings == []


@pytest.fixture
def fd(be: MockBackend) -> Fd:
    """An open /dev/iommu."""
    return Fd(be)
