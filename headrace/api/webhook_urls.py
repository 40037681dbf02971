"""Which callback URLs Headrace will POST to: checked at submit (a 400) and again at every
delivery, since what a name resolves to can change (DNS rebinding).

https only, to hosts whose every address is public: no loopback, private (10/8, 172.16/12,
192.168/16, fc00::/7), link-local (169.254/16, the instance metadata service included, fe80::/10),
shared (100.64/10), multicast, reserved or unspecified address, also when wrapped in IPv6
(::ffff:a.b.c.d, 6to4, Teredo). A delivery connects to the address it checked, not to a fresh
lookup. Development only (`webhook_allow_loopback`): plain http, to loopback addresses alone.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from headrace.core.contracts import CompletionRequest
from headrace.core.errors import InvalidRequest
from headrace.core.settings import Settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


@dataclass(frozen=True)
class CallbackTarget:
    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query, as the request line carries it
    address: str  # the checked address a delivery connects to


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (literal addresses resolve to themselves)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise InvalidRequest(f"callback_url: the host {host!r} does not resolve ({e})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: IpAddress) -> str | None:
    """Why an address may not receive webhooks; None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            return refusal(embedded)
    checks: list[tuple[bool, str]] = [
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (the instance metadata service among them)"),
        (address.is_multicast, "multicast"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "not public"),
    ]
    return next((why for refused, why in checks if refused), None)


def check_callback_url(
    url: str, *, allow_loopback: bool, resolver: Resolver = resolve
) -> CallbackTarget:
    """The URL's parts and the address to deliver to; InvalidRequest naming callback_url."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidRequest(f"callback_url: not a URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise InvalidRequest("callback_url: must be an https URL")
    if scheme == "http" and not allow_loopback:
        raise InvalidRequest("callback_url: must be https (plain http is refused)")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("callback_url: credentials in the URL are not accepted")
    host = parts.hostname
    if not host:
        raise InvalidRequest("callback_url: has no host")
    port = port or (443 if scheme == "https" else 80)
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    if not addresses:
        raise InvalidRequest(f"callback_url: the host {host!r} does not resolve")
    for address in addresses:
        why = refusal(address)
        if why is None and scheme == "http":
            why = "public, and plain http goes only to loopback (use https)"
        if why is not None and not (allow_loopback and why == "loopback"):
            raise InvalidRequest(
                f"callback_url: {host!r} resolves to {address}, a {why} address: refused"
            )
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return CallbackTarget(url, scheme, host, port, target, str(addresses[0]))


def check_request(settings: Settings, request: CompletionRequest) -> None:
    """A request's callback fields, as the API checks them before recording a job."""
    if request.callback_url is None:
        if request.callback_events is not None:
            raise InvalidRequest("callback_events: needs a callback_url")
        return
    check_callback_url(request.callback_url, allow_loopback=settings.webhook_allow_loopback)
