"""The client's address, honouring X-Forwarded-For / X-Real-IP only from trusted proxies.

A client can put anything in those headers, so they count only when the peer itself is one of
`RUSTCHAT_TRUSTED_PROXIES`; then the address is the right-most hop that is not a trusted proxy
(every proxy appends the address it saw, so only the entries our proxies wrote are reliable).
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from rustchat import keys

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str) -> tuple[Network, ...]:
    """`10.0.0.5, 10.1.0.0/16, ::1` → networks; raises ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in raw.split(",") if item.strip())


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None, networks: tuple[Network, ...]) -> bool:
    return addr is not None and any(addr in net for net in networks)


def client_address(request: web.Request) -> str:
    peer = request.remote or "unknown"
    networks = request.app[keys.SETTINGS].trusted_proxies
    if not networks or not _trusted(_ip(peer), networks):
        return peer
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        for hop in reversed(forwarded.split(",")):
            addr = _ip(hop)
            if addr is None:
                break  # garbage in the chain: stop trusting anything further left
            if not _trusted(addr, networks):
                return str(addr)
    real = _ip(request.headers.get("X-Real-IP", ""))
    if real is not None:
        return str(real)
    return peer
