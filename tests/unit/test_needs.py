"""Needs between components: the spec syntax, matching, and the install order."""

from __future__ import annotations

import pytest

from edgeota.needs import Running, install_order, need_met, unmet_needs
from edgeota.versionspec import check_spec


@pytest.mark.parametrize(
    ("have", "spec", "met"),
    [
        ("1.3.0", ">=1.3.0", True),
        ("1.2.9", ">=1.3.0", False),
        ("2.0.0", ">=1.3.0,<2.0.0", False),
        ("1.9.0", ">=1.3.0, <2.0.0", True),
        ("1.2.0", "==1.2.0", True),
        ("1.4.0", "!=1.4.0", False),
        (None, ">=0.0.0", False),
        ("0.1.0", "*", True),
        ("1.2.0", "1.2.0", True),
        ("not-a-version", ">=1.0.0", False),
    ],
)
def test_need_met(have: str | None, spec: str, met: bool) -> None:
    assert need_met(have, spec) is met


@pytest.mark.parametrize("spec", ["", ">=1.3", ">=1.3.0,", "~1.3.0"])
def test_bad_specs_say_what_to_write(spec: str) -> None:
    with pytest.raises(ValueError, match=r"use '\*', a version such as 1.2.0, or clauses"):
        check_spec(spec)
    assert not need_met("1.3.0", spec)


def test_install_order_puts_needed_components_first() -> None:
    needs = {"app": {"model": ">=1.3.0"}, "model": {"config": ">=1.0.0"}}
    assert install_order(needs, ["app", "config", "model", "zeta"]) == [
        "config",
        "model",
        "app",
        "zeta",
    ]


def test_install_order_survives_a_cycle() -> None:
    needs = {"a": {"b": ">=1.0.0"}, "b": {"a": ">=1.0.0"}}
    assert sorted(install_order(needs, ["b", "a"])) == ["a", "b"]


def test_unmet_needs_names_owner_need_and_what_is_there() -> None:
    running = {
        "app": Running("2.1.0", {"model": ">=1.3.0", "config": ">=1.0.0"}),
        "model": Running("1.2.0", {}),
    }
    assert [str(u) for u in unmet_needs(running)] == [
        "app 2.1.0 needs config >=1.0.0, found no config",
        "app 2.1.0 needs model >=1.3.0, found model 1.2.0",
    ]
