"""OrjsonTranscoder reads what eventsourcing's own JSONTranscoder writes, and writes what it
reads, for the values Baton's events hold (a UUID value orjson writes as its plain string: ids in
Baton's events are strings)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

from baton.domain.codec import OrjsonTranscoder


def transcoders() -> tuple[OrjsonTranscoder, JSONTranscoder]:
    ours, library = OrjsonTranscoder(), JSONTranscoder()
    for transcoder in (ours, library):
        transcoder.register(UUIDAsHex())
        transcoder.register(DatetimeAsISO())
    return ours, library


datetimes = st.one_of(
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))),
)
text = st.text(max_size=12)
# Plain values, with strings that spell the marker (escaped in the JSON, never a marker) and
# dicts that use its keys as data of their own.
plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    text,
    st.sampled_from(['"_type_"', "_type_", '{"_type_": "uuid_hex", "_data_": "x"}']),
)


def states(typed: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(
        st.one_of(plain, typed),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(
                st.one_of(text, st.sampled_from(["_type_", "_data_"])), inner, max_size=4
            ),
        ),
        max_leaves=12,
    )
    return st.dictionaries(text, values, max_size=6)


def library_round_trip(library: JSONTranscoder, state: dict[str, Any]) -> Any:
    try:
        return library.decode(library.encode(state))
    except Exception:  # a dict the library cannot round trip (its own marker keys): not ours
        return None


@settings(max_examples=400, deadline=None)
@given(states(st.one_of(datetimes, st.uuids())))
def test_a_state_the_library_wrote_reads_back_as_the_library_reads_it(
    state: dict[str, Any],
) -> None:
    ours, library = transcoders()
    expected = library_round_trip(library, state)
    if expected is not None:
        assert ours.decode(library.encode(state)) == expected


@settings(max_examples=400, deadline=None)
@given(states(datetimes))
def test_a_state_we_wrote_reads_back_alike_through_either(state: dict[str, Any]) -> None:
    ours, library = transcoders()
    expected = library_round_trip(library, state)
    if expected is not None:
        assert ours.decode(ours.encode(state)) == expected
        assert library.decode(ours.encode(state)) == expected


def test_an_event_state_with_typed_values_at_the_top_and_deeper() -> None:
    ours, library = transcoders()
    when = datetime(2026, 12, 2, 19, 0, 0, 123456, tzinfo=UTC)
    ident = UUID("12345678123456781234567812345678")
    for state in (
        {"timestamp": when, "originator_topic": "t", "n": 1},
        {"timestamp": when, "steps": [{"step_id": "a", "at": when}], "at": [when]},
        {"timestamp": when, "result": {"_type_": "not a marker", "_data_": [1], "n": 2}},
        {"timestamp": when, "result": 'a string with "_type_" in it'},
        {"timestamp": when, "_type_": "a key of the event's own"},
    ):
        assert ours.decode(ours.encode(state)) == library.decode(library.encode(state)) == state
    # A UUID the library wrote reads back as a UUID.
    assert ours.decode(library.encode({"timestamp": when, "id": ident})) == {
        "timestamp": when,
        "id": ident,
    }
