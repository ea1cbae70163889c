"""`ps --filter` and `container prune --filter`: Docker's filter keys over container records.

Keys: id (prefix), name (substring), label (KEY or KEY=VALUE), status, ancestor (image name or
id prefix), exited (exit code), health, before/since are not kept; `until` (prune) takes Unix
seconds or RFC 3339. Values of one key are OR-ed (label values are AND-ed, as Docker
does), keys are AND-ed. An unknown key is an
`InvalidArgument` naming it.
"""

from __future__ import annotations

from carte.api.errors import InvalidArgument
from carte.api.timestamps import parse_rfc3339
from carte.handlers.containers._records import ContainerRecord

_KEYS = ("id", "name", "label", "status", "ancestor", "exited", "health")
_PRUNE_KEYS = ("label", "until")


def matches_filters(
    record: ContainerRecord, filters: dict[str, list[str]], *, prune: bool = False
) -> bool:
    allowed = _PRUNE_KEYS if prune else _KEYS
    for key, values in filters.items():
        if key not in allowed:
            raise InvalidArgument(
                f'filter "{key}" is not supported; use one of {", ".join(allowed)}'
            )
        combine = all if key == "label" else any
        if values and not combine(_matches(record, key, value) for value in values):
            return False
    return True


def _matches(record: ContainerRecord, key: str, value: str) -> bool:
    if key == "id":
        return record.id.startswith(value)
    if key == "name":
        return value.removeprefix("/") in record.name
    if key == "label":
        name, sep, wanted = value.partition("=")
        labels = record.config.labels
        return name in labels and (not sep or labels[name] == wanted)
    if key == "status":
        return record.state.status == value
    if key == "ancestor":
        image = record.image
        return value in (image, image.partition(":")[0]) or (
            len(value) >= 4
            and record.image_id.removeprefix("sha256:").startswith(value.removeprefix("sha256:"))
        )
    if key == "exited":
        return record.state.status == "exited" and str(record.state.exit_code) == value
    if key == "health":
        health = record.state.health.status if record.state.health is not None else "none"
        return health == value
    if key == "until":
        try:
            limit = float(value)
        except ValueError:
            limit = parse_rfc3339(value)
        if not limit:
            raise InvalidArgument(f'filter until "{value}" is not a time; use Unix seconds')
        return parse_rfc3339(record.created) < limit
    return False
