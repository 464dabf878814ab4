"""Persisting sessions: save and resume conversations across application restarts.

The "Persisting Sessions" recipe of the assistant SDKs, run against this service. The recipe's
code is kept as written; what changes is the import and the client's class, and the history calls
are awaited (``get_messages()`` is a coroutine, as it is in the SDK and in the TypeScript recipe,
so the bookmark helpers that call it become ``async def``):

    from copilot import CopilotClient          ->  from redis_sessions_client import SessionClient
    client = CopilotClient()                   ->  client = SessionClient()
    messages = session.get_messages()          ->  messages = await session.get_messages()

``SessionClient()`` reads the service's address and key from ``SESSIONS_URL`` and
``SESSIONS_API_KEY``; ``pip install ./clients/python`` installs it (it depends on httpx only).

Run it against a running service (``sessionctl dev`` prints a key, or create a tenant with
``sessionctl tenants create``)::

    export SESSIONS_URL=http://127.0.0.1:8000 SESSIONS_API_KEY=sk_...
    python examples/persisting_sessions.py

``EXPORT_DIR`` sets where ``conversation.json`` is written (default: a new temporary folder).
Every session it makes is deleted at the end; a second run starts from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis_sessions_client import Message, Session, SessionClient, SessionError, SessionInfo

user_id, project_name, task_id = "42", "webapp", "1337"
DEMO_SESSION_IDS = [
    "project-discussion-2024",
    f"user-{user_id}-main",
    f"project-{project_name}-2024",
    f"task-{task_id}-review",
    "persistent-assistant",
    "my-session",
]


def show(label: str, reply: Any) -> None:
    content = reply.data["content"] if reply is not None else "(no reply)"
    print(f"  {label}: {content[:160]}")


async def quick_start(client: SessionClient) -> None:
    print("== Save and resume")
    # Create a session with a memorable ID
    session = await client.create_session({"session_id": "project-discussion-2024"})

    # Have a conversation
    show("reply", await session.send_and_wait({"prompt": "Let's plan a web app architecture"}))
    show("reply", await session.send_and_wait({"prompt": "What database should we use?"}))

    # Destroy (but preserve for resuming)
    await session.destroy()

    # Later... resume the session
    resumed = await client.resume_session("project-discussion-2024")
    reply = await resumed.send_and_wait({"prompt": "What were we discussing?"})
    # Session remembers the full conversation context!
    show("after resume", reply)
    assert "What database should we use?" in reply.data["content"]

    await resumed.destroy()


async def custom_ids(client: SessionClient) -> list[Session]:
    print("== Custom session IDs")
    # User-based sessions
    user_session = await client.create_session({"session_id": f"user-{user_id}-main"})

    # Project-based sessions
    project_session = await client.create_session({"session_id": f"project-{project_name}-2024"})

    # Task-based sessions
    task_session = await client.create_session({"session_id": f"task-{task_id}-review"})

    for session in (user_session, project_session, task_session):
        print(f"  created {session.session_id}")
    return [user_session, project_session, task_session]


async def infinite_session(client: SessionClient) -> Session:
    print("== Infinite sessions")
    infinite_session = await client.create_session(
        {
            "session_id": "persistent-assistant",
            "infinite_sessions": True,  # Never expires
        }
    )
    print(
        f"  infinite={infinite_session.info.infinite} expires_at={infinite_session.info.expires_at}"
    )
    show("reply", await infinite_session.send_and_wait({"prompt": "Remember my name is Ada"}))
    return infinite_session


async def conversation_history(session: Session, export_dir: Path) -> Path:
    print("== Conversation history")
    # Get all messages
    messages = await session.get_messages()

    for msg in messages:
        print(f"  [{msg.role}] {msg.content[:100]}")

    path = export_dir / "conversation.json"
    export_to_json(messages, path)
    print(f"  exported {len(messages)} messages to {path}")

    # The service's own export: metadata, bookmarks and every event.
    full = export_dir / "session-export.json"
    full.write_text(json.dumps(await session.export(), indent=2))
    print(f"  full export written to {full}")
    return path


def export_to_json(messages: list[Message], path: Path) -> None:
    # Export to JSON
    history = [{"role": msg.role, "content": msg.content, "id": msg.id} for msg in messages]

    with open(path, "w") as f:
        json.dump(history, f, indent=2)


class ConversationBookmarks:
    """Track important points in a conversation."""

    def __init__(self) -> None:
        self.bookmarks: dict[str, dict[str, Any]] = {}

    async def mark(self, session: Session, name: str, description: str = "") -> None:
        """Mark current position in conversation."""
        messages = await session.get_messages()
        self.bookmarks[name] = {
            "message_index": len(messages) - 1,
            "message_id": messages[-1].id if messages else None,
            "description": description,
        }

    async def get_context_since(self, session: Session, bookmark_name: str) -> list[Any]:
        """Get all messages since a bookmark."""
        if bookmark_name not in self.bookmarks:
            return []

        bookmark = self.bookmarks[bookmark_name]
        messages = await session.get_messages()
        return messages[bookmark["message_index"] + 1 :]


async def conversation_bookmarks(session: Session) -> None:
    print("== Conversation bookmarks")
    bookmarks = ConversationBookmarks()

    await session.send_and_wait({"prompt": "Let's start the design"})
    await bookmarks.mark(session, "design_start", "Beginning of design discussion")

    await session.send_and_wait({"prompt": "Now let's discuss implementation"})
    await bookmarks.mark(session, "implementation_start")

    # Later, get context since a bookmark
    design_discussion = await bookmarks.get_context_since(session, "design_start")
    print(f"  {len(design_discussion)} messages since 'design_start' (kept in this process)")

    # The same, stored with the session: any process can read it after a restart.
    await session.bookmark("design_start", "Beginning of design discussion")
    await session.send_and_wait({"prompt": "Which framework fits best?"})
    since = await session.get_messages_since("design_start")
    print(f"  {len(since)} messages since the stored bookmark 'design_start'")
    for mark in await session.get_bookmarks():
        print(f"  bookmark {mark.name}: {mark.description} (after {mark.message_count} messages)")


async def session_management(client: SessionClient) -> None:
    print("== Session management")
    # List all available sessions
    sessions = await client.list_sessions()

    for session_info in sessions:
        sid = session_info.get("sessionId", "unknown")
        modified = session_info.get("modifiedTime", "N/A")
        summary = session_info.get("summary", "No summary")

        print(f"Session: {sid}")
        print(f"  Modified: {modified}")
        print(f"  Summary: {summary}")


async def get_or_create_session(
    client: SessionClient, session_id: str, config: dict[str, Any] | None = None
) -> Session:
    """Resume existing session or create new one."""
    try:
        return await client.resume_session(session_id)
    except RuntimeError:
        return await client.create_session({"session_id": session_id, **(config or {})})


async def safe_resume(client: SessionClient) -> None:
    print("== Safe resume with fallback")
    # Usage
    session = await get_or_create_session(client, "my-session")
    print(f"  first call: {session.session_id} ({session.info.message_count} messages, new)")
    await session.send_and_wait({"prompt": "Keep this for later"})
    again = await get_or_create_session(client, "my-session")
    print(f"  second call: {again.session_id} ({again.info.message_count} messages, resumed)")


def is_old(session_info: SessionInfo, max_age: timedelta = timedelta(days=30)) -> bool:
    return datetime.now(UTC) - session_info.modified_time > max_age


async def permanent_deletion(client: SessionClient) -> None:
    print("== Permanent deletion")
    # Cleanup old sessions
    sessions = await client.list_sessions()
    old = 0
    for session_info in sessions:
        if is_old(session_info):
            await client.delete_session(session_info["sessionId"])
            old += 1
    print(f"  deleted {old} sessions idle for more than 30 days")

    # Permanently delete - cannot be recovered
    for session_id in DEMO_SESSION_IDS:
        await client.delete_session(session_id)
    print(f"  deleted the {len(DEMO_SESSION_IDS)} sessions of this walkthrough")
    try:
        await client.resume_session("project-discussion-2024")
    except RuntimeError as exc:
        print(f"  resuming a deleted session fails: {exc}")
    else:
        raise AssertionError("a deleted session came back")


async def remove_leftovers(client: SessionClient) -> None:
    """Sessions of an earlier, interrupted run would make the ids below taken."""
    for session_id in DEMO_SESSION_IDS:
        with contextlib.suppress(RuntimeError):
            await client.delete_session(session_id)


async def main() -> int:
    client = SessionClient()
    await client.start()
    export_dir = Path(os.environ.get("EXPORT_DIR") or tempfile.mkdtemp(prefix="sessions-"))
    try:
        await remove_leftovers(client)
        await quick_start(client)
        await custom_ids(client)
        assistant = await infinite_session(client)
        await conversation_bookmarks(assistant)
        await conversation_history(assistant, export_dir)
        await session_management(client)
        await safe_resume(client)
        await permanent_deletion(client)
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.stop()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
