"""Open event streams end at once when the server process is asked to stop.

uvicorn, on SIGTERM or SIGINT, stops accepting connections and waits for the open ones to finish
before it runs the app's shutdown: an event stream never finishes by itself, so a rollout would
wait out the graceful timeout and then cancel the streams with a traceback. ``sessionctl serve``
therefore chains a handler in front of uvicorn's (``end_streams_on_signals``, called by the app
factory, which uvicorn runs inside its own signal capture, in every worker process): it sets the
``stopping()`` event of every event loop, the stream loops end, and the process exits at once.
Clients reconnect with ``Last-Event-ID`` to a replica still running.
"""

from __future__ import annotations

import asyncio
import signal
import weakref
from types import FrameType
from typing import Any

_events: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = (
    weakref.WeakKeyDictionary()
)
_stopped = False


def stopping() -> asyncio.Event:
    """The running loop's event, set once the process is stopping."""
    loop = asyncio.get_running_loop()
    event = _events.get(loop)
    if event is None:
        event = _events[loop] = asyncio.Event()
        if _stopped:
            event.set()
    return event


def stop_streams() -> None:
    """Set every loop's event; safe from a signal handler or another thread."""
    global _stopped
    _stopped = True
    for loop, event in list(_events.items()):
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


def end_streams_on_signals() -> None:
    """Chain ``stop_streams`` in front of the handlers installed for SIGTERM and SIGINT."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            stop_streams()
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)
