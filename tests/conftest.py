"""Fixtures shared by all tests."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

REQUIRE_ALL = os.environ.get("EDGEOTA_REQUIRE_ALL_TESTS") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip when a system part is missing on a developer machine; fail in CI."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (EDGEOTA_REQUIRE_ALL_TESTS=1 turns this skip into a failure)")
    pytest.skip(reason)


class RecordingSigner:
    """Stands in for the TUF repository where a test checks only the API."""

    def __init__(self) -> None:
        self.signed: list[tuple[str, int, str, dict[str, object]]] = []

    def sign_targets(self, targets: Sequence[tuple[str, int, str, dict[str, object]]]) -> None:
        self.signed.extend(targets)

    def refresh_expiring(self) -> list[str]:
        return []
