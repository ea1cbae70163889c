"""`ps`'s CREATED ("5 minutes ago") reads the API's UTC times without `datetime`, to the
same second as `datetime` reads them."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from carte.cli.commands.containers import _utc_seconds

MOMENTS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2400, 12, 31))


@settings(max_examples=500, deadline=None)
@given(MOMENTS)
def test_api_times_read_as_datetime_reads_them(moment: datetime) -> None:
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert _utc_seconds(stamp) == moment.replace(tzinfo=UTC).timestamp()


def test_other_forms_go_through_datetime_and_junk_is_none() -> None:
    assert _utc_seconds("2026-12-07T18:38:41+01:00") == 1796665121.0
    assert _utc_seconds("2026-12-07T18:38:41Z") == 1796668721.0
    for junk in ("", "junk", "2026-13-01T00:00:00Z", "2026-12-07 at noon"):
        assert _utc_seconds(junk) is None, junk
