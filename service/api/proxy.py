"""The client address behind proxies: the address the outermost trusted proxy saw.

Each proxy in front of the API appends the address it received the request from to
``X-Forwarded-For``; everything to the left of those entries was written by the client and can say
anything. So with ``SESSIONS_PROXY_HOPS=n`` proxies in front, the client is the n-th entry from the
right, and the entries further left are ignored. Counting from the left (what uvicorn's own proxy
headers do when every peer is trusted) would let a client choose its address, and with it the key
failure counter it is charged to.

The header is read only on connections from ``SESSIONS_FORWARDED_ALLOW_IPS`` (addresses or
networks, ``*`` for any peer); from any other peer the peer's own address counts. With 0 hops (the
default) the header is never read.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedPeers:
    """Peers whose ``X-Forwarded-For`` is read: any (``*``) or the listed networks."""

    any_peer: bool
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str) -> TrustedPeers:
        """``"*"`` or comma-separated addresses and networks (``10.0.0.0/8``); ``ValueError``
        for anything else."""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if "*" in items:
            return cls(True, ())
        return cls(False, tuple(ipaddress.ip_network(item, strict=False) for item in items))

    def __contains__(self, host: object) -> bool:
        if self.any_peer:
            return True
        address = parse_address(host) if isinstance(host, str) else None
        return address is not None and any(address in network for network in self.networks)


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address from a forwarded entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``),
    or None for anything else (``unknown``, obfuscated names, garbage)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def forwarded_client(values: list[str], hops: int) -> str | None:
    """The client address in ``X-Forwarded-For`` values (in header order) behind ``hops``
    proxies: the ``hops``-th entry from the right (the leftmost when there are fewer entries: the
    request passed fewer proxies), or None when that entry is not an IP address."""
    entries = [entry for value in values for entry in value.split(",")]
    if not entries or hops < 1:
        return None
    address = parse_address(entries[max(0, len(entries) - hops)])
    return str(address) if address is not None else None


class ForwardedClient:
    """Pure ASGI middleware: sets the request's client address to ``forwarded_client`` when the
    peer is a trusted proxy, so every later use (the key failure limit, logs) sees it."""

    def __init__(self, app: ASGIApp, hops: int, trusted: str) -> None:
        self.app = app
        self.hops = hops
        self.trusted = TrustedPeers.parse(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hops > 0 and scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if peer is not None and peer[0] in self.trusted:
                values = [
                    v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"
                ]
                client = forwarded_client(values, self.hops)
                if client is not None:
                    scope["client"] = (client, 0)
        await self.app(scope, receive, send)
