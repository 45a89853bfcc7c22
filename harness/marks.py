"""The plugin's markers, namespaced so they cannot clash with another project's.

``iommufd_kselftest(fixture, variants=...)``: the kernel fixture group of a ported case
(declare it with :func:`harness.kselftest.fixture`).
``iommufd_requires(*features, reason='')``: backend features a test needs; where the
backend lacks one the test is skipped with the reason (:func:`requires`).
``iommufd_fail_nth``: sweep the case with fail_nth fault injection (:data:`fail_nth`).
``iommufd_on_host``: on a qemu backend, run the case on the host with each call crossing
to the guest's agent, not inside the guest (:data:`on_host`).

The marks are built here directly rather than through ``pytest.mark.<name>``: a
scenario module is imported (and its marks made) before the plugin has woken up and
registered the marker names, and pytest would warn about an unknown mark there.
"""

from __future__ import annotations

from typing import Any

import pytest

KSELFTEST = "iommufd_kselftest"
REQUIRES = "iommufd_requires"
FAIL_NTH = "iommufd_fail_nth"
ON_HOST = "iommufd_on_host"

#: ``markers`` ini lines, registered once a session runs iommufd scenarios
DESCRIPTIONS = (
    f"{KSELFTEST}(fixture, variants): a ported case of the kernel fixture group",
    f"{REQUIRES}(*features, reason=''): backend features the test needs; skipped where "
    "the backend lacks one",
    f"{FAIL_NTH}: sweep this case with fail_nth fault injection",
    f"{ON_HOST}: on a qemu backend, run on the host, each call crossing to the guest",
)


def build(name: str, *args: Any, **kwargs: Any) -> pytest.MarkDecorator:
    """The mark ``name(*args, **kwargs)``, made without pytest's unknown-mark check."""
    mark = pytest.Mark(name, args, kwargs, _ispytest=True)
    return pytest.MarkDecorator(mark, _ispytest=True)


def requires(*features: str, reason: str = "") -> pytest.MarkDecorator:
    """Mark a test (module, class) as needing backend ``features`` (see ``Features``)."""
    return build(REQUIRES, *features, reason=reason)


#: Sweep the marked test (module, class) with fail_nth fault injection (harness.fail_nth).
fail_nth = build(FAIL_NTH)

#: Run the marked test on the host even where a qemu backend runs cases inside the guest:
#: for cases that drive the guest from outside (claim and give back its devices across
#: runs, interrupt a run) or need the host's own modules.
on_host = build(ON_HOST)
