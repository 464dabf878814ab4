"""Per-session data and responses stay bounded (real Redis, the Cluster and fakeredis): an infinite
session's idempotency keys are pruned to the newest ones, and list pages read and carry no system
messages and end early once their text passes a budget."""

from __future__ import annotations

import pytest

from service import keys as K
from service.errors import LimitExceeded
from service.models import NewEvent
from service.scripts import IDEMPOTENCY_KEYS_KEPT, IDEMPOTENCY_PRUNE_BATCH
from service.store import Store, TenantStore
from service.store import bookmarks as store_bookmarks
from service.store import listing as store_listing


def user(text: str) -> NewEvent:
    return NewEvent(type="user.message", data={"content": text})


async def test_idempotency_keys_of_an_infinite_session_are_bounded(
    store: Store, acme: TenantStore
) -> None:
    await acme.create("forever", model="m", infinite=True)
    sends = IDEMPOTENCY_KEYS_KEPT + 2 * IDEMPOTENCY_PRUNE_BATCH + 7
    ids = []
    for i in range(sends):
        ids.append(
            (await acme.append("forever", [user(str(i))], idempotency_key=f"k{i}")).event_ids[0]
        )
    idem = K.session_keys(store.prefix, "acme", "forever").idem
    kept = await store.redis.hgetall(idem)
    assert len(kept) < IDEMPOTENCY_KEYS_KEPT + IDEMPOTENCY_PRUNE_BATCH
    assert len(kept) >= IDEMPOTENCY_KEYS_KEPT
    # The newest keys are the ones kept, each still naming its first event.
    newest = {f"k{i}": ids[i] for i in range(sends - IDEMPOTENCY_KEYS_KEPT, sends)}
    assert newest.items() <= kept.items()
    again = await acme.append(
        "forever", [user("retry")], idempotency_key=f"k{sends - IDEMPOTENCY_KEYS_KEPT}"
    )
    assert again.duplicate and again.event_ids == [ids[sends - IDEMPOTENCY_KEYS_KEPT]]
    assert "k0" not in kept


async def test_list_pages_leave_out_system_messages_and_end_at_a_byte_budget(
    acme: TenantStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = "s" * 4_000  # the store of these tests allows 4 KiB
    for i in range(12):
        await acme.create(f"s{i:02d}", model="m", system_message=big)
        await acme.update(f"s{i:02d}", summary="x" * 9_000)
    page = await acme.list_sessions(limit=100)
    assert len(page.data) == 12 and page.next_cursor is None
    assert all(info.system_message == "" for info in page.data)
    assert (await acme.get("s00")).system_message == big  # a single read has it

    monkeypatch.setattr(store_listing, "LIST_PAGE_BYTES", 40_000)  # four items of ~9.5 KB
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await acme.list_sessions(limit=100, cursor=cursor)
        assert 1 <= len(page.data) <= 4
        seen += [info.session_id for info in page.data]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages >= 3
    assert sorted(seen) == [f"s{i:02d}" for i in range(12)] and len(set(seen)) == 12


async def test_bookmarks_per_session_are_capped(
    store: Store, acme: TenantStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_bookmarks, "MAX_BOOKMARKS", 5)
    await acme.create("b", model="m")
    await acme.append("b", [user("x")])
    for i in range(5):
        await acme.set_bookmark("b", f"m{i}")
    with pytest.raises(LimitExceeded, match="5 bookmarks"):
        await acme.set_bookmark("b", "one-more")
    await acme.set_bookmark("b", "m0", "moved")  # an existing name is not a new bookmark
    marks = await acme.list_bookmarks("b")
    assert sorted(m.name for m in marks) == [f"m{i}" for i in range(5)]
    assert {m.name: m.description for m in marks}["m0"] == "moved"
