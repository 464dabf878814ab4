"""Open-ended input at the HTTP level, against the running service: session ids, label maps,
cursors, event ids and prompts drawn from the whole of Unicode (control characters, NUL, RTL
marks, emoji, non-characters; never lone surrogates, which no UTF-8 request can carry).

The service answers with 2xx or a 4xx problem document, never 5xx; it accepts exactly what the
documented rules accept; and what it accepts reads back exactly as it was sent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.errors import InvalidInput
from service.ids import validate_labels, validate_session_id
from service.paging import encode_cursor
from tests.security.conftest import LiveServer, TenantKey, assert_problem

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SAFE_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)
TRICKY = [
    "\x00",
    "a\x00b",
    "\t\r\n\x0b\x0c\x1b[31m",
    "\u202eevil\u202c",  # right-to-left override
    "مرحبا بالعالم",
    "שלום",
    "👩\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈",
    "e\u0301\u0301\u0301",  # combining marks
    "\ufeff\u200b\u2028\u2029",  # BOM, zero width space, line and paragraph separators
    "\U0010ffff\ufffe\uffff",  # non-characters
    "\\u0000 \\ud800 not escapes",
    '{"prompt": "nested"}',
    "' OR 1=1 --",
    "*?[]{}:%2F../..",
]


def path_segment(value: str) -> str:
    """``value`` as one URL path segment (dots too, so no client or server resolves ``..``)."""
    return quote(value, safe="").replace(".", "%2E")


def is_valid(check: object, value: object) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except InvalidInput:
        return False
    return True


@pytest.fixture
def http(live: LiveServer, live_alpha: TenantKey) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, headers=live_alpha.headers, timeout=10) as c:
        yield c


def create(http: httpx.Client, **body: object) -> httpx.Response:
    return http.post("/v1/sessions", json=body)


def ok_or_problem(r: httpx.Response, *statuses: int) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert_problem(r, set(statuses) or None)


def test_session_ids(http: httpx.Client) -> None:
    created: set[str] = set()

    @SETTINGS
    @given(st.one_of(st.text(max_size=200), SAFE_ID, st.sampled_from(TRICKY)))
    @example("." * 2)
    @example("a" * 128)
    @example("a" * 129)
    @example("a/../../b")
    @example("x%2F..%2Fy")
    @example("{alpha/s}")
    @example("s*")
    @example("a:b")
    @example("é")
    def check(sid: str) -> None:
        valid = is_valid(validate_session_id, sid)
        r = create(http, session_id=sid)
        if not valid:
            assert_problem(r, 422)
        elif sid in created:
            assert_problem(r, 409)
        else:
            assert r.status_code == 201, r.text
            assert r.json()["session_id"] == sid
            created.add(sid)
        if not sid:
            return
        segment = path_segment(sid)
        for method, url in (
            ("GET", f"/v1/sessions/{segment}"),
            ("GET", f"/v1/sessions/{segment}/messages"),
            ("GET", f"/v1/sessions/{segment}/events"),
            ("GET", f"/v1/sessions/{segment}/bookmarks"),
            ("GET", f"/v1/sessions/{segment}/export"),
        ):
            r = http.request(method, url)
            if valid:
                assert r.status_code == 200, (url, r.status_code, r.text[:300])
            else:  # refused before any key is built; a decoded "/" may match another route
                ok_or_problem(r, 404, 405, 422)
                assert r.status_code != 200 or sid.count("/") > 0, (url, r.text[:300])
        assert r.status_code >= 400 or r.json()["session"]["session_id"] == sid

    check()


LABEL_KEYS = st.one_of(st.text(max_size=70), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,20}"))
LABEL_VALUES = st.one_of(st.text(max_size=300), st.sampled_from(TRICKY))


def test_label_maps_round_trip(http: httpx.Client) -> None:
    @SETTINGS
    @given(st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=40))
    @example({"k": "\x00"})
    @example({"team": "\u202eevil", "emoji": "👩\u200d👩\u200d👧"})
    @example({f"k{i}": "v" for i in range(33)})
    @example({"a/b.c_d-e": "x" * 256})
    @example({"a": "x" * 257})
    @example({"*": "v", "{x}": "v"})
    def check(labels: dict[str, str]) -> None:
        sid = f"lbl-{uuid.uuid4().hex}"
        r = create(http, session_id=sid, labels=labels)
        if not is_valid(validate_labels, labels):
            assert_problem(r, 422)
            return
        assert r.status_code == 201, r.text
        assert r.json()["labels"] == labels
        assert http.get(f"/v1/sessions/{sid}").json()["labels"] == labels
        if labels:  # every label together finds it
            query = [("label", f"{k}={v}") for k, v in labels.items()]
            page = http.get("/v1/sessions", params=[*query, ("limit", "1000")])
            assert page.status_code == 200, page.text
            assert sid in {s["session_id"] for s in page.json()["data"]}
        swapped = {k: v[::-1] for k, v in labels.items()}
        r = http.patch(f"/v1/sessions/{sid}", json={"labels": swapped})
        assert r.status_code == 200 and r.json()["labels"] == swapped
        assert http.delete(f"/v1/sessions/{sid}").status_code == 204

    check()


def test_label_filters(http: httpx.Client) -> None:
    assert create(http, session_id="f1", labels={"k": "v"}).status_code == 201

    @SETTINGS
    @given(st.lists(st.text(max_size=80), max_size=5))
    @example(["=v"])
    @example(["k"])
    @example(["k=v=w"])
    @example(["bad key=v"])
    @example(["k=\x00"])
    def check(filters: list[str]) -> None:
        r = http.get("/v1/sessions", params=[("label", f) for f in filters])
        ok_or_problem(r, 422)
        if r.status_code == 200 and filters == ["k=v"]:
            assert [s["session_id"] for s in r.json()["data"]] == ["f1"]

    check()


SCORES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "infinity", "+inf", "-inf", " 1", "1 ", "1_0"]),
    st.sampled_from(["1e999", "-1e999", "0x10", "1.5", "1e3", "(5", "[5", "5\x00", "٣"]),
    st.integers().map(str),
    st.floats(allow_nan=True).map(repr),
)
CURSORS = st.one_of(
    st.text(max_size=1100),
    st.builds(encode_cursor, SCORES, st.text(max_size=50)),
    st.binary(max_size=200).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode()),
)


def test_cursors(http: httpx.Client) -> None:
    for i in range(3):
        assert create(http, session_id=f"c{i}").status_code == 201
    first = http.get("/v1/sessions", params={"limit": 1}).json()
    issued = first["next_cursor"]
    assert issued

    @SETTINGS
    @given(CURSORS)
    @example(issued)
    @example(issued + "A")
    @example(issued[:-2])
    @example(encode_cursor("nan", "c1"))
    @example(encode_cursor("+inf", "\x00"))
    @example(encode_cursor(["1"], "c1"))  # type: ignore[arg-type]
    @example("W1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tb")  # "[[[[..."
    def check(cursor: str) -> None:
        r = http.get("/v1/sessions", params={"cursor": cursor, "limit": 2})
        ok_or_problem(r, 422)
        if r.status_code == 200:
            assert isinstance(r.json()["data"], list)

    check()


EVENT_IDS = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"[0-9]{1,20}(-[0-9]{1,20})?", fullmatch=True),
    st.sampled_from(
        ["0", "0-0", "-", "+", "$", ">", "*", "18446744073709551615-18446744073709551615"]
    ),
    st.sampled_from(["18446744073709551616-0", "1-", "-1", "1--1", "1-1-1", "\x00", "1\n2"]),
)


def test_event_ids_and_stream_positions(http: httpx.Client) -> None:
    assert create(http, session_id="ev").status_code == 201
    assert http.post("/v1/sessions/ev/messages", json={"prompt": "hi"}).status_code == 202

    @SETTINGS
    @given(EVENT_IDS)
    def check(value: str) -> None:
        for url, params in (
            ("/v1/sessions/ev/events", {"after": value}),
            ("/v1/sessions/ev/events", {"before": value}),
            ("/v1/sessions/ev/events", {"after": value, "reverse": "true"}),
            ("/v1/sessions/ev/messages", {"after": value}),
            ("/v1/lifecycle", {"after": value}),
        ):
            r = http.get(url, params=params)
            ok_or_problem(r, 422)
        if value.isprintable() and value.isascii():  # what a header can carry
            headers = {"Last-Event-ID": value}
            with http.stream("GET", "/v1/sessions/ev/events/stream", headers=headers) as r:
                if r.status_code != 200:  # a valid id opens the stream; left at once
                    r.read()
                    ok_or_problem(r, 422)

    check()


HEADER_TEXT = st.characters(min_codepoint=0x20, max_codepoint=0x7E)  # what a header can carry
PROMPTS = st.one_of(
    st.text(min_size=1, max_size=400),
    st.sampled_from(TRICKY),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1),
)


def test_prompts_round_trip_exactly(http: httpx.Client) -> None:
    assert create(http, session_id="rt").status_code == 201

    @SETTINGS
    @given(
        PROMPTS, st.one_of(st.none(), st.text(alphabet=HEADER_TEXT, max_size=210).map(str.strip))
    )
    @example("x", "")
    @example("x", "k" * 201)
    def check(prompt: str, idempotency_key: str | None) -> None:
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        r = http.post("/v1/sessions/rt/messages", json={"prompt": prompt}, headers=headers)
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            assert_problem(r, 422)
            return
        assert r.status_code == 202, r.text
        message_id = r.json()["message_id"]
        if r.json()["duplicate"]:
            return  # a key seen before: the first prompt stands (tested in tests/api)
        events = http.get("/v1/sessions/rt/events", params={"reverse": "true", "limit": 1})
        assert events.json()["data"][0] == {
            "id": message_id,
            "timestamp": events.json()["data"][0]["timestamp"],
            "type": "user.message",
            "data": {"content": prompt},
        }
        messages = http.get("/v1/sessions/rt/messages", params={"after": prev(message_id)})
        assert [(m["role"], m["content"], m["id"]) for m in messages.json()["data"]][:1] == [
            ("user", prompt, message_id)
        ]

    check()
    export = http.get("/v1/sessions/rt/export", params={"format": "jsonl"})
    # Lines end at "\n" only (str.splitlines would also cut at U+2028, which JSON keeps raw)
    lines = [json.loads(line) for line in export.text.split("\n") if line]
    stored = http.get("/v1/sessions/rt/events").json()["data"]
    assert lines[1:] == stored[: len(lines) - 1]


def prev(event_id: str) -> str:
    """The stream id just before ``event_id`` (``after`` is exclusive)."""
    ms, _, seq = event_id.partition("-")
    return f"{ms}-{int(seq) - 1}" if int(seq or 0) > 0 else f"{int(ms) - 1}-99999999"


def test_text_fields_round_trip(http: httpx.Client) -> None:
    @SETTINGS
    @given(
        st.one_of(st.text(max_size=300), st.sampled_from(TRICKY)),
        st.one_of(st.text(max_size=250), st.sampled_from(TRICKY)),
        st.one_of(st.text(max_size=200), st.sampled_from(TRICKY)),
    )
    def check(system_message: str, name: str, model: str) -> None:
        sid = f"tf-{uuid.uuid4().hex}"
        r = create(http, session_id=sid, system_message=system_message, name=name, model=model)
        if len(name) > 200 or not model or len(model) > 200:
            ok_or_problem(r, 422)
            if r.status_code != 201:
                return
        assert r.status_code == 201, r.text
        got = http.get(f"/v1/sessions/{sid}").json()
        assert (got["system_message"], got["name"]) == (system_message, name)
        assert got["model"] == (model or got["model"])
        r = http.patch(f"/v1/sessions/{sid}", json={"summary": system_message[:100]})
        assert r.status_code == 200 and r.json()["summary"] == system_message[:100]
        r = http.put(f"/v1/sessions/{sid}/bookmarks/b", json={"description": name[:100]})
        assert r.status_code == 200 and r.json()["description"] == name[:100]
        assert http.delete(f"/v1/sessions/{sid}").status_code == 204

    check()
