"""The plugin's fixtures: the public surface a scenario uses (kept stable).

``backend_spec`` (session)
    the backend spec of this test (``mock``, ``kernel``, ``qemu:x86_64``, ...).
``backend`` (session)
    the opened :class:`backends.Backend`; one per spec, shut down at the end of the run.
``kglobals`` (session)
    the selftest's shared buffers and sizes (:class:`harness.helpers.SelftestGlobals`).
``iommufd``
    an open /dev/iommu (:class:`harness.helpers.Iommufd`), closed after the test and
    followed by the kernel fixtures' pin-leak check.
``variant_name`` / ``variant``
    the kernel fixture variant of a ported case: its name and its declared fields.

Registered only once a session runs iommufd scenarios (see :mod:`harness.plugin`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backends import Backend, BackendError, Features, open_backend
from harness import known_issues, kselftest, marks
from harness.helpers.core import Iommufd, SelftestGlobals
from harness.helpers.selftest import check_refs
from harness.state import STATE

#: the fixture run first in each ported or feature-marked case (see ``case_checks``)
CASE_CHECKS = "_iommufd_case_checks"


@pytest.fixture(scope="session")
def backend_spec(request: pytest.FixtureRequest) -> str:
    """The backend spec of this test (parametrized when several are given)."""
    param: str | None = getattr(request, "param", None)
    return param or request.config.stash[STATE].specs[0]


def session_backend(config: pytest.Config, spec: str) -> Backend:
    """The session's backend for ``spec``, opened on first use (and shut down at the
    end); one that cannot open ends the run with its one-line reason."""
    opened = config.stash[STATE].backends
    if spec not in opened:
        try:
            candidate = open_backend(spec)
            candidate.__enter__()
        except BackendError as error:
            pytest.exit(f"iommufd-harness: {error}", returncode=pytest.ExitCode.USAGE_ERROR)
        opened[spec] = candidate
    return opened[spec]


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest, backend_spec: str) -> Backend:
    """The opened backend; a backend that cannot open ends the run with its one-line reason."""
    return session_backend(request.config, backend_spec)


@pytest.fixture(scope="session")
def kglobals(backend: Backend) -> SelftestGlobals:
    """PAGE_SIZE, HUGEPAGE_SIZE, BUFFER_SIZE and the shared ``buffer``/``mfd_buffer``."""
    return SelftestGlobals.create(backend)


def check_no_pins(backend: Backend, globals_: SelftestGlobals) -> None:
    """The kernel fixtures' teardown: no page of ``buffer`` may stay pinned."""
    with Iommufd.open(backend) as fd:
        try:
            check_refs(fd, globals_.buffer, globals_.buffer_size, 0)
        except OSError as error:
            raise AssertionError(f"pages of the shared buffer are still pinned: {error}") from None


@pytest.fixture
def iommufd(backend: Backend, kglobals: SelftestGlobals) -> Iterator[Iommufd]:
    """An open /dev/iommu; closed afterwards, then MD_CHECK_REFS(refs=0) over ``buffer``."""
    opened = Iommufd.open(backend)
    yield opened
    opened.close()
    if backend.has(Features.SELFTEST):
        check_no_pins(backend, kglobals)


@pytest.fixture
def variant_name(request: pytest.FixtureRequest) -> str:
    """The kernel variant name a ported case runs with."""
    name: str | None = getattr(request, "param", None)
    if name is None:
        raise pytest.UsageError(f"{request.node.nodeid}: its kselftest fixture declares "
                                "no variants")
    return name


@pytest.fixture
def variant(request: pytest.FixtureRequest, variant_name: str) -> Any:
    """The kernel fixture variant's fields (the object declared for ``variant_name``)."""
    marker = request.node.get_closest_marker(kselftest.MARKER)
    assert marker is not None
    return marker.kwargs["variants"][variant_name]


@pytest.fixture(name=CASE_CHECKS)
def case_checks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Capability skips and known-issue xfails, before any other fixture of the case;
    after the case (its teardown included, as this fixture is torn down last), a kernel
    WARN it caused fails it with the splat, as a WARN in the kernel's own run would.

    Not autouse: the plugin puts it first in the fixtures of ported cases and of tests
    marked ``iommufd_requires`` only.
    """
    item = request.node
    active: Backend = request.getfixturevalue("backend")
    # Module, class and function markers add up: each names features it needs.
    for marker in reversed(list(item.iter_markers(marks.REQUIRES))):  # outermost first
        missing = active.missing(*marker.args)
        if missing:
            why = marker.kwargs.get("reason", "")
            pytest.skip(f"backend {active.spec} lacks {', '.join(missing)}"
                        + (f": {why}" if why else ""))
    name = kselftest.name_of(item)
    if name is not None:
        reason = known_issues.lookup(request.config.stash[STATE].issues,
                                     active.kernel_release, name)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
    active.take_splats()  # what came before this case is not its doing
    yield
    splats = active.take_splats()
    if splats:
        pytest.fail("kernel splat during the case: " + "; ".join(splats), pytrace=False)
