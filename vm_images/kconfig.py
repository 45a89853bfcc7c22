"""Kconfig fragments: parse them, and check that every option of one landed in a .config.

``make olddefconfig`` silently drops an option whose dependencies are not met
(IOMMUFD_TEST without IOMMU_PT_AMDV1, for one), so a build that trusts the fragment
can boot a kernel without the very feature under test. ``missing_options`` is that check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse_config(text: str) -> dict[str, str]:
    """Options of a fragment or .config: name -> value, with ``# X is not set`` as ``"n"``.

    Other comments and blank lines are ignored; a later line for the same option wins,
    as it does in Kconfig.
    """
    options: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _SET.match(line):
            options[m.group(1)] = m.group(2)
        elif m := _NOT_SET.match(line):
            options[m.group(1)] = "n"
    return options


def read_config(path: Path) -> dict[str, str]:
    """``parse_config`` of a file."""
    return parse_config(path.read_text())


@dataclass(frozen=True)
class Mismatch:
    """One fragment option that the final .config does not honour."""

    option: str
    wanted: str
    got: str | None  # None: absent from .config (Kconfig never offered it)

    def __str__(self) -> str:
        got = "absent" if self.got is None else ("not set" if self.got == "n" else self.got)
        return f"{self.option}={self.wanted} (got: {got})"


def missing_options(fragment: Mapping[str, str], config: Mapping[str, str]) -> list[Mismatch]:
    """Every fragment option the .config does not have, in fragment order.

    ``=n`` is honoured when the option is absent or "is not set"; any other value
    must be present with exactly that value.
    """
    wrong: list[Mismatch] = []
    for option, wanted in fragment.items():
        got = config.get(option)
        if wanted == "n":
            if got not in (None, "n"):
                wrong.append(Mismatch(option, wanted, got))
        elif got != wanted:
            wrong.append(Mismatch(option, wanted, got))
    return wrong


class ConfigMismatchError(RuntimeError):
    """The built .config lacks options the fragment asked for; the message names them all."""

    def __init__(self, fragment: Path, config: Path, wrong: list[Mismatch]) -> None:
        self.wrong = wrong
        names = "\n  ".join(str(m) for m in wrong)
        super().__init__(
            f"{len(wrong)} option(s) of {fragment} did not land in {config} "
            f"(make olddefconfig dropped them: a dependency is missing from the fragment):"
            f"\n  {names}")


def verify_config(fragment: Path, config: Path) -> None:
    """Raise ConfigMismatchError naming every fragment option missing from ``config``."""
    wrong = missing_options(read_config(fragment), read_config(config))
    if wrong:
        raise ConfigMismatchError(fragment, config, wrong)
