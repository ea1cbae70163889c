"""Counts and durations a stack file gives are bounded before anything is stored (issue 11
items 1 and 16): replicas, autoscale bounds, ports and ulimits above their ceilings, and
negative durations, are each refused in one line naming file, line and key."""

from __future__ import annotations

import pytest

from carte.stack import ManifestError, load_manifest
from carte.stack.validate import Ceilings

HUGE = 99999999999999999999999


def refusal(text: str, ceilings: Ceilings | None = None) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest(text, "compose.yaml", {}, ceilings=ceilings)
    return str(caught.value)


def service(body: str) -> str:
    return "services:\n  web:\n    image: busybox\n" + body


def test_huge_replica_count_is_refused_at_its_line() -> None:
    message = refusal(service(f"    deploy:\n      replicas: {HUGE}\n"))
    assert message.startswith("compose.yaml:5: "), message
    assert "replicas" in message and "ceiling of 1000" in message and "\n" not in message


def test_autoscale_max_and_the_configured_ceiling() -> None:
    text = service("    x-carte:\n      autoscale: {min: 1, max: 50}\n")
    load_manifest(text, "compose.yaml", {})  # within the default ceiling
    message = refusal(text, Ceilings(replicas=20))
    assert "max" in message and "ceiling of 20" in message, message


def test_port_ranges_and_ulimits_are_bounded() -> None:
    message = refusal(service('    expose: ["1-5000"]\n'))
    assert "5000 ports" in message and "ceiling" in message, message
    message = refusal(service(f"    ulimits:\n      nofile: {HUGE}\n"))
    assert "nofile" in message and "unlimited" in message, message
    load_manifest(service("    ulimits:\n      nofile: -1\n"), "compose.yaml", {})


@pytest.mark.parametrize("value", ["-5s", "-5"])
def test_negative_durations_are_refused(value: str) -> None:
    text = service(
        "    x-carte:\n      autoscale:\n        max: 3\n"
        f"        scale_down_stabilization: {value}\n"
    )
    message = refusal(text)
    assert "scale_down_stabilization" in message and "negative" in message, message
    message = refusal(service(f"    deploy:\n      restart_policy:\n        delay: {value}\n"))
    assert "delay" in message and "negative" in message, message
