"""Kernel selftest names for ported cases: ``fixture.variant.test``.

The kernel's kselftest_harness names a case ``fixture.variant.test`` (``fixture.test``
when the fixture has no variants). A ported module declares its fixture group once::

    pytestmark = kselftest.fixture("iommufd_ioas", VARIANTS)

and each ``test_<name>`` function in it becomes case ``iommufd_ioas.<variant>.<name>``;
the plugin parametrizes ``variant_name`` (and so the ``variant`` fixture) with the
variants under test IDs that are the kernel names (``test_area[iommufd_ioas.mock_domain.area]``),
and uses the names in the KTAP, JUnit and KCIDB reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from harness import marks

MARKER = marks.KSELFTEST


def fixture(name: str, variants: Mapping[str, Any] | None = None) -> pytest.MarkDecorator:
    """Mark a module or class as the kernel fixture group ``name`` with its variants.

    ``variants`` maps the kernel's variant names to the objects a test receives through
    the ``variant`` fixture (for example a frozen dataclass of FIXTURE_VARIANT fields),
    in the kernel's declaration order.
    """
    return marks.build(MARKER, name, variants=dict(variants or {}))


def case_name(fixture_name: str, variant: str | None, function_name: str) -> str:
    """The kernel's case name for a ported test function."""
    test = function_name.removeprefix("test_")
    if variant:
        return f"{fixture_name}.{variant}.{test}"
    return f"{fixture_name}.{test}"


def name_of(item: pytest.Item) -> str | None:
    """The kselftest name of ``item``, or None for tests that are not ported cases."""
    marker = item.get_closest_marker(MARKER)
    if marker is None or not marker.args:
        return None
    function = getattr(item, "originalname", item.name)
    callspec = getattr(item, "callspec", None)
    variant = callspec.params.get("variant_name") if callspec is not None else None
    return case_name(str(marker.args[0]), variant, function)

