"""Python client of the session service.

```python
from service.client import SessionClient

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
``destroy``); options are accepted as a config dict or as keywords. Every call is a coroutine.
"""

from service.client._client import SessionClient
from service.client._errors import (
    AuthenticationError,
    RateLimited,
    ServerError,
    SessionError,
    SessionNotFound,
    TurnError,
    ValidationError,
)
from service.client._models import Bookmark, Event, Message, SessionInfo
from service.client._session import Session

__all__ = [
    "AuthenticationError",
    "Bookmark",
    "Event",
    "Message",
    "RateLimited",
    "ServerError",
    "Session",
    "SessionClient",
    "SessionError",
    "SessionInfo",
    "SessionNotFound",
    "TurnError",
    "ValidationError",
]

for _name in __all__:  # shown as service.client.X in reprs and tracebacks
    globals()[_name].__module__ = __name__
del _name
