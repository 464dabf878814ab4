"""Python client of the Redis session service: ``SessionClient`` (async) and
``SyncSessionClient`` (blocking), with the same calls.

```python
from redis_sessions_client import SessionClient

async with SessionClient("http://sessions:8000", api_key=KEY) as client:
    session = await client.create_session({"session_id": "user-42-main"})
    reply = await session.send_and_wait({"prompt": "Let's plan a web app"})
    print(reply.data["content"])
    await session.destroy()                      # handle released, data kept
    resumed = await client.resume_session("user-42-main")
    for msg in await resumed.get_messages():
        print(f"[{msg.role}] {msg.content}")
```

The calls follow the session API of assistant SDKs (``create_session``, ``resume_session``,
``list_sessions``, ``delete_session``, ``send``, ``send_and_wait``, ``on``, ``get_messages``,
``destroy``); options are accepted as a config dict or as keywords. ``SESSIONS_URL`` and
``SESSIONS_API_KEY`` are read when no URL or key is given.
"""

from redis_sessions_client._client import SessionClient
from redis_sessions_client._errors import (
    AuthenticationError,
    ProtocolError,
    RateLimited,
    ServerError,
    SessionError,
    SessionNotFound,
    TurnError,
    ValidationError,
    WaitTimeout,
)
from redis_sessions_client._models import Bookmark, Event, Message, SessionInfo
from redis_sessions_client._session import Session
from redis_sessions_client._sync import SyncSessionClient
from redis_sessions_client._sync_session import SyncSession

__all__ = [
    "AuthenticationError",
    "Bookmark",
    "Event",
    "Message",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "Session",
    "SessionClient",
    "SessionError",
    "SessionInfo",
    "SessionNotFound",
    "SyncSession",
    "SyncSessionClient",
    "TurnError",
    "ValidationError",
    "WaitTimeout",
]

for _name in __all__:  # shown as redis_sessions_client.X in reprs and tracebacks
    globals()[_name].__module__ = __name__
del _name
