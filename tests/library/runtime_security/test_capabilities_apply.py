"""capabilities.apply / apply_after_setuid leave exactly the requested sets, for real."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from carte.api.errors import InvalidArgument
from carte.runtime import capabilities
from carte.runtime.capabilities import (
    CAPABILITY_NUMBERS,
    DEFAULT_CAPABILITIES,
    LinuxCapabilities,
)

RunProbe = Callable[..., dict[str, Any]]


def _mask(names: list[str]) -> str:
    return f"{sum(1 << CAPABILITY_NUMBERS[name] for name in names):016x}"


def test_root_keeps_exactly_the_default_sets(run_probe: RunProbe) -> None:
    requested = capabilities.default_capabilities()
    results = run_probe(
        capabilities=msgspec.to_builtins(requested), probes=["capabilities", "chown", "ids"]
    )
    held = results["capabilities"]
    assert held["effective"] == list(DEFAULT_CAPABILITIES_IN_BIT_ORDER)
    assert held["permitted"] == held["effective"]
    assert held["bounding"] == held["effective"]
    assert held["inheritable"] == [] and held["ambient"] == []
    assert "CAP_NET_RAW" not in held["bounding"] and "CAP_SYS_ADMIN" not in held["bounding"]
    assert results["chown"] == "ok"
    assert results["ids"] == [0, 0, 0]


DEFAULT_CAPABILITIES_IN_BIT_ORDER = sorted(DEFAULT_CAPABILITIES, key=CAPABILITY_NUMBERS.__getitem__)


def test_a_dropped_capability_stops_what_it_guards(run_probe: RunProbe) -> None:
    names = capabilities.resolve_cap_changes([], ["chown"])
    results = run_probe(
        capabilities=msgspec.to_builtins(capabilities.capabilities_from(names)),
        probes=["chown", "capabilities"],
    )
    assert results["chown"] == "EPERM"
    assert "CAP_CHOWN" not in results["capabilities"]["bounding"]


def test_non_root_user_gets_ambient_capabilities_through_exec(run_probe: RunProbe) -> None:
    """As runc does for `--user 65534 --cap-add NET_BIND_SERVICE`: the cap reaches the program."""
    ambient = ["CAP_NET_BIND_SERVICE"]
    bounding = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETFCAP"]
    requested = LinuxCapabilities(
        bounding=bounding,
        effective=ambient,
        permitted=ambient,
        inheritable=ambient,
        ambient=ambient,
    )
    results = run_probe(
        uid=65534,
        capabilities=msgspec.to_builtins(requested),
        probes=["ids", "capabilities", "exec_capabilities", "chown"],
    )
    assert results["ids"] == [65534, 65534, 65534]
    held = results["capabilities"]
    assert held == {
        "effective": ambient,
        "permitted": ambient,
        "inheritable": ambient,
        "bounding": bounding,
        "ambient": ambient,
    }
    after_exec = results["exec_capabilities"]
    assert after_exec["CapEff"] == _mask(ambient)
    assert after_exec["CapAmb"] == _mask(ambient)
    assert after_exec["CapBnd"] == _mask(bounding)
    assert results["chown"] == "EPERM"


def test_non_root_user_without_capabilities_holds_none(run_probe: RunProbe) -> None:
    requested = LinuxCapabilities(bounding=list(DEFAULT_CAPABILITIES))
    results = run_probe(
        uid=65534, capabilities=msgspec.to_builtins(requested), probes=["exec_capabilities"]
    )
    assert results["exec_capabilities"]["CapEff"] == "0" * 16
    assert results["exec_capabilities"]["CapPrm"] == "0" * 16
    assert results["exec_capabilities"]["CapBnd"] == _mask(DEFAULT_CAPABILITIES_IN_BIT_ORDER)


def test_apply_refuses_an_unknown_name_before_changing_anything() -> None:
    before = capabilities.current_capabilities()
    with pytest.raises(InvalidArgument, match='unknown capability "CAP_FLY"'):
        capabilities.apply(LinuxCapabilities(bounding=["CAP_FLY"]))
    assert capabilities.current_capabilities() == before


def test_asking_for_a_capability_already_given_up_names_it(run_probe: RunProbe) -> None:
    """A capability outside the runtime's own sets cannot be granted; the error says which."""
    first = capabilities.default_capabilities()
    wanted = capabilities.capabilities_from([*DEFAULT_CAPABILITIES, "CAP_SYS_TIME"])
    results = run_probe(
        capabilities=msgspec.to_builtins(first),
        reapply=msgspec.to_builtins(wanted),
        probes=["capabilities"],
    )
    assert "capabilities CAP_SYS_TIME cannot be granted" in results["reapply_error"]
    assert "CAP_SYS_TIME" not in results["capabilities"]["effective"]


def test_cap_add_all_is_what_this_process_can_grant(run_probe: RunProbe) -> None:
    everything = capabilities.capabilities_from(capabilities.resolve_cap_changes(["ALL"], []))
    results = run_probe(capabilities=msgspec.to_builtins(everything), probes=["capabilities"])
    assert results["capabilities"]["bounding"] == everything.bounding
    assert results["capabilities"]["effective"] == everything.effective


def test_ambient_without_inheritable_is_skipped_not_fatal(run_probe: RunProbe) -> None:
    """Engines that list ambient caps but leave inheritable empty (after CVE-2022-24769) still
    start, as under runc; the process just gets no ambient capability."""
    names = ["CAP_NET_BIND_SERVICE"]
    requested = LinuxCapabilities(bounding=names, effective=names, permitted=names, ambient=names)
    results = run_probe(
        uid=65534, capabilities=msgspec.to_builtins(requested), probes=["capabilities"]
    )
    assert results["capabilities"]["ambient"] == []
    assert results["capabilities"]["effective"] == names
