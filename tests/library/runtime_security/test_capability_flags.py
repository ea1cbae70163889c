"""Docker's --cap-add / --cap-drop semantics."""

from __future__ import annotations

import pytest

from carte.api.errors import InvalidArgument
from carte.runtime.capabilities import (
    DEFAULT_CAPABILITIES,
    all_capabilities,
    capabilities_from,
    default_capabilities,
    normalize_capability,
    resolve_cap_changes,
)


def test_default_is_podmans_eleven() -> None:
    assert len(DEFAULT_CAPABILITIES) == 11
    assert not {"CAP_MKNOD", "CAP_NET_RAW", "CAP_AUDIT_WRITE"} & set(DEFAULT_CAPABILITIES)
    caps = default_capabilities()
    assert set(caps.bounding) == set(DEFAULT_CAPABILITIES)
    assert caps.effective == caps.permitted == caps.bounding
    assert caps.inheritable == [] and caps.ambient == []


def test_no_changes_keeps_the_base() -> None:
    assert set(resolve_cap_changes([], [])) == set(DEFAULT_CAPABILITIES)


def test_names_are_case_insensitive_with_or_without_prefix() -> None:
    added = resolve_cap_changes(["net_admin", "CAP_SYS_TIME", "Sys_Nice"], [])
    assert {"CAP_NET_ADMIN", "CAP_SYS_TIME", "CAP_SYS_NICE"} <= set(added)
    dropped = resolve_cap_changes([], ["chown", "CAP_KILL"])
    assert "CAP_CHOWN" not in dropped and "CAP_KILL" not in dropped
    assert normalize_capability(" cap_bpf ") == "CAP_BPF"


def test_add_all_gives_everything_but_the_drops() -> None:
    names = resolve_cap_changes(["ALL"], ["net_raw", "sys_admin"])
    assert set(names) == set(all_capabilities()) - {"CAP_NET_RAW", "CAP_SYS_ADMIN"}


def test_drop_all_keeps_only_the_adds() -> None:
    assert resolve_cap_changes(["chown", "kill"], ["all"]) == ("CAP_CHOWN", "CAP_KILL")
    assert resolve_cap_changes([], ["ALL"]) == ()


def test_a_name_in_both_lists_is_kept_as_docker_does() -> None:
    assert "CAP_NET_ADMIN" in resolve_cap_changes(["NET_ADMIN"], ["NET_ADMIN"])


def test_result_is_in_bit_order_without_duplicates() -> None:
    names = resolve_cap_changes(["setfcap", "chown", "CHOWN"], ["ALL"])
    assert names == ("CAP_CHOWN", "CAP_SETFCAP")


@pytest.mark.parametrize("bad", ["NET_FLY", "CAP_", "", "CAP_CHOWN2"])
def test_unknown_name_is_a_one_line_error_naming_it(bad: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        resolve_cap_changes([bad], [])
    assert f'unknown capability "{bad}"' in raised.value.message
    assert "\n" not in raised.value.message
    with pytest.raises(InvalidArgument):
        resolve_cap_changes([], [bad])
    with pytest.raises(InvalidArgument):
        capabilities_from([bad])
