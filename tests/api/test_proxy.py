"""Reading the client address from X-Forwarded-For: the entry the outermost trusted proxy
appended, never one the client wrote; only from trusted peers; never with 0 hops."""

from __future__ import annotations

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from service.api.proxy import ForwardedClient, TrustedPeers, forwarded_client, parse_address
from service.config import Settings


@pytest.mark.parametrize(
    ("values", "hops", "client"),
    [
        (["198.51.100.66"], 1, "198.51.100.66"),
        (["10.0.0.1, 198.51.100.66"], 1, "198.51.100.66"),  # left entry: the client's own
        (["10.0.0.1", "198.51.100.66"], 1, "198.51.100.66"),  # two header lines, in order
        (["10.0.0.1, 198.51.100.66, 172.16.0.9"], 2, "198.51.100.66"),
        (["198.51.100.66"], 2, "198.51.100.66"),  # fewer entries than hops: all proxy-written
        (["[2001:db8::1]:443"], 1, "2001:db8::1"),
        (["192.0.2.1:8080"], 1, "192.0.2.1"),
        (["198.51.100.66, unknown"], 1, None),  # not an address: the peer counts
        ([], 1, None),
        (["198.51.100.66"], 0, None),
    ],
)
def test_forwarded_client(values: list[str], hops: int, client: str | None) -> None:
    assert forwarded_client(values, hops) == client


def test_trusted_peers() -> None:
    peers = TrustedPeers.parse("10.0.0.0/8, ::1")
    assert "10.2.3.4" in peers and "::1" in peers
    assert "192.0.2.1" not in peers and "garbage" not in peers
    assert "192.0.2.1" in TrustedPeers.parse("*")
    assert parse_address("not-an-ip") is None
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        Settings(forwarded_allow_ips="10.0.0.0/33")


@pytest.mark.parametrize(
    ("peer", "hops", "allow", "client"),
    [
        ("10.1.1.1", 1, "10.0.0.0/8", "203.0.113.7"),
        ("192.0.2.5", 1, "10.0.0.0/8", "192.0.2.5"),  # not a trusted proxy: its own address
        ("10.1.1.1", 0, "*", "10.1.1.1"),  # 0 hops: the header is never read
        ("10.1.1.1", 2, "*", "1.1.1.1"),
    ],
)
async def test_the_middleware_sets_the_client_address(
    peer: str, hops: int, allow: str, client: str
) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["client"][0])
        await PlainTextResponse("ok")(scope, receive, send)

    transport = httpx.ASGITransport(app=ForwardedClient(app, hops, allow), client=(peer, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        r = await http.get("/", headers={"X-Forwarded-For": "1.1.1.1, 203.0.113.7"})
    assert r.status_code == 200 and seen == [client]


def test_serve_flags_become_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.cli import serve
    from service.cli.main import build_parser

    monkeypatch.delenv("SESSIONS_PROXY_HOPS", raising=False)
    parse = build_parser().parse_args
    assert serve.proxy_environment(parse(["serve"])) == {}
    assert serve.proxy_environment(parse(["serve", "--proxy-headers"])) == {
        "SESSIONS_PROXY_HOPS": "1"
    }
    args = parse(["serve", "--proxy-headers", "--proxy-hops", "2", "--forwarded-allow-ips", "*"])
    assert serve.proxy_environment(args) == {
        "SESSIONS_PROXY_HOPS": "2",
        "SESSIONS_FORWARDED_ALLOW_IPS": "*",
    }
    assert serve.uvicorn_options(args)["proxy_headers"] is False  # never uvicorn's reading
    monkeypatch.setenv("SESSIONS_PROXY_HOPS", "3")
    assert serve.proxy_environment(parse(["serve", "--proxy-headers"])) == {}
