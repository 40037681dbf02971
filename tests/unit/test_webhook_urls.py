"""Which callback URLs are refused (headrace.api.webhook_urls), with the name resolution given:
every address class, the dev setting that allows loopback over plain http, and a name that
resolves to a refused address among public ones."""

from __future__ import annotations

import pytest

from headrace.api.webhook_urls import Resolver, check_callback_url
from headrace.core.errors import InvalidRequest

PUBLIC = "93.184.216.34"


def resolver(*addresses: str) -> Resolver:
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "::1",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",
        "fd00:ec2::254",
        "fc00::1",
        "fe80::1",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.251",
        "ff02::1",
        "240.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:a9fe:a9fe::1",  # 6to4 wrapping 169.254.169.254
    ],
)
def test_every_address_class_but_public_is_refused(address: str) -> None:
    with pytest.raises(InvalidRequest, match=r"^callback_url: .* refused$"):
        check_callback_url(
            "https://hooks.example.com/h", allow_loopback=False, resolver=resolver(address)
        )


def test_a_public_address_is_taken_and_pinned() -> None:
    target = check_callback_url(
        "https://hooks.example.com:8443/in?a=1", allow_loopback=False, resolver=resolver(PUBLIC)
    )
    assert (target.host, target.port, target.target, target.address) == (
        "hooks.example.com",
        8443,
        "/in?a=1",
        PUBLIC,
    )


def test_one_refused_address_among_public_ones_refuses_the_url() -> None:
    with pytest.raises(InvalidRequest, match=r"10\.0\.0\.7"):
        check_callback_url(
            "https://hooks.example.com/",
            allow_loopback=False,
            resolver=resolver(PUBLIC, "10.0.0.7"),
        )


def test_plain_http_and_other_schemes_and_credentials_are_refused() -> None:
    for url in ("http://hooks.example.com/", "ftp://hooks.example.com/", "https://u:p@x.example/"):
        with pytest.raises(InvalidRequest, match=r"^callback_url: "):
            check_callback_url(url, allow_loopback=False, resolver=resolver(PUBLIC))


def test_the_dev_setting_allows_loopback_and_plain_http_to_it_only() -> None:
    for address in ("127.0.0.1", "::1"):
        target = check_callback_url(
            "http://localhost:9000/h", allow_loopback=True, resolver=resolver(address)
        )
        assert target.address == address
    with pytest.raises(InvalidRequest, match="plain http goes only to loopback"):
        check_callback_url(
            "http://hooks.example.com/", allow_loopback=True, resolver=resolver(PUBLIC)
        )
    with pytest.raises(InvalidRequest, match="private"):
        check_callback_url("http://x.example/", allow_loopback=True, resolver=resolver("10.0.0.1"))
