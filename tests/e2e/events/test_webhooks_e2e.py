"""Webhooks over the wire: signed as Standard Webhooks specifies (checked with the
`standardwebhooks` verifier a receiver would use), retried on 5xx, never on another 4xx, every
attempt in the delivery log, redelivered on request; callback URLs to refused addresses are a
400; a rotated secret keeps signing beside the new one for its window, then stops."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from tests.e2e.event_support import (
    Receiver,
    clients,
    owner_id,
    receiver,
    tap,
    validate,
    wait_for,
)
from tests.e2e.support import Api

PROMPT = {"prompt": "The river", "max_new_tokens": 4, "temperature": 0}


def _api(stack: LocalStack) -> Api:
    return Api(stack.base_url, stack.api_key)


def _secret(api: Api) -> dict[str, Any]:
    status, secret = api.call("GET", "/v1/webhooks/secret")
    assert status == 200, secret
    assert secret["secret"].startswith("whsec_")
    return dict(secret)


def _attempts(api: Api, request_id: str, count: int) -> list[dict[str, Any]]:
    """The job's delivery log once it holds `count` attempts (404 while the job is not
    recorded yet: one submitted by an event)."""

    def logged() -> list[dict[str, Any]] | None:
        status, view = api.call("GET", f"/v1/llm/completions/{request_id}/deliveries")
        if status == 404:
            return None
        assert status == 200, view
        return view["deliveries"] if len(view["deliveries"]) >= count else None

    attempts: list[dict[str, Any]] = wait_for(logged, what=f"{count} attempts of {request_id}")
    return attempts


def test_two_failures_then_200_make_three_signed_attempts_and_one_success(
    events_stack: LocalStack,
) -> None:
    api = _api(events_stack)
    secret = _secret(api)
    with receiver([500, 503, 200]) as hook:
        request_id = api.submit({**PROMPT, "callback_url": hook.url, "metadata": {"order": 7}})
        attempts = _attempts(api, request_id, 3)
        got = list(hook.requests)
    assert [a["outcome"] for a in attempts] == ["retrying", "retrying", "delivered"]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["latency_ms"] >= 0 and a["url"] == hook.url for a in attempts)
    assert attempts[0]["next_retry_at"] and attempts[2]["next_retry_at"] is None
    assert attempts[0]["response_body"] == "answered 500"
    assert len(got) == 3
    assert {headers["webhook-id"] for headers, _ in got} == {attempts[0]["event_id"]}
    payloads = [Webhook(secret["secret"]).verify(body, headers) for headers, body in got]
    assert payloads[0] == payloads[2]
    validate(payloads[0], "webhook")
    assert payloads[0]["type"] == "completion.succeeded"
    data = payloads[0]["data"]
    assert (data["request_id"], data["status"], data["metadata"]) == (
        request_id,
        "SUCCEEDED",
        {"order": 7},
    )
    assert data["owner"] == owner_id(events_stack.api_key)
    assert api.wait(request_id)["callback_url"] == hook.url


def test_a_404_is_tried_once_and_redeliver_sends_the_last_event_again(
    events_stack: LocalStack,
) -> None:
    api = _api(events_stack)
    with receiver([404]) as hook:
        request_id = api.submit({**PROMPT, "callback_url": hook.url})
        (first,) = _attempts(api, request_id, 1)
        assert (first["outcome"], first["status_code"]) == ("failed", 404)
        time.sleep(1.0)  # absence: three retry delays pass, and no second attempt comes
        assert len(hook.requests) == 1
        assert len(_attempts(api, request_id, 1)) == 1
        status, answer = api.call("POST", f"/v1/llm/completions/{request_id}/deliveries/redeliver")
        assert status == 202, answer
        assert (answer["event_id"], answer["type"]) == (first["event_id"], "completion.succeeded")
        second = _attempts(api, request_id, 2)[1]
        assert (second["redelivery"], second["attempt"], second["outcome"]) == (True, 1, "failed")
        assert [h["webhook-id"] for h, _ in hook.requests] == [first["event_id"]] * 2
    other = api.call("POST", f"/v1/llm/completions/{uuid.uuid4()}/deliveries/redeliver")
    assert other[0] == 404


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/hook",  # private, 10/8
        "https://172.16.0.1/hook",  # private, 172.16/12
        "https://192.168.1.1/hook",  # private, 192.168/16
        "https://169.254.169.254/latest/meta-data/",  # link-local: instance metadata
        "https://[fd00:ec2::254]/hook",  # unique local, fc00::/7 (the IPv6 metadata address)
        "https://[fe80::1]/hook",  # link-local
        "https://100.64.0.1/hook",  # shared address space
        "https://0.0.0.0/hook",  # unspecified
        "https://[::ffff:10.0.0.1]/hook",  # a private IPv4 address inside IPv6
        "https://224.0.0.1/hook",  # multicast
        "http://93.184.216.34/hook",  # plain http to anything but loopback
        "ftp://example.com/hook",
        "https://user:password@example.com/hook",
    ],
)
def test_a_callback_url_to_a_refused_address_is_a_400(events_stack: LocalStack, url: str) -> None:
    status, answer = _api(events_stack).call(
        "POST",
        f"/v1/llm/completions-async?model_endpoint_name={DEV_MODEL_NAME}",
        {**PROMPT, "callback_url": url},
    )
    assert status == 400, answer
    assert answer["detail"].startswith("callback_url:"), answer


def test_intake_requests_carry_callbacks_and_are_refused_alike(events_stack: LocalStack) -> None:
    stack, api = events_stack, _api(events_stack)
    assert stack.resources is not None
    events, _, _ = clients(stack)
    secret = _secret(api)
    request_id = str(uuid.uuid4())
    with receiver([200]) as hook, tap(stack, {"detail-type": ["Completion Rejected"]}) as bus:
        base = {"owner": owner_id(stack.api_key), "model": DEV_MODEL_NAME, **PROMPT}
        details = [
            {**base, "request_id": request_id, "callback_url": hook.url}
            | {"callback_events": ["started", "succeeded"]},
            {**base, "callback_url": "https://169.254.169.254/"},
        ]
        entries = [
            {
                "EventBusName": stack.resources.event_bus_name,
                "Source": "my.app",
                "DetailType": "Completion Requested",
                "Detail": json.dumps(detail),
            }
            for detail in details
        ]
        assert events.put_events(Entries=entries)["FailedEntryCount"] == 0
        attempts = _attempts(api, request_id, 2)
        rejected = bus.collect(lambda seen: len(seen) >= 1)[0]["detail"]
        got = list(hook.requests)
    assert sorted(a["type"] for a in attempts) == ["completion.started", "completion.succeeded"]
    assert all(a["outcome"] == "delivered" for a in attempts)
    kinds = sorted(Webhook(secret["secret"]).verify(b, h)["type"] for h, b in got)
    assert kinds == ["completion.started", "completion.succeeded"]
    assert rejected["reason"].startswith("callback_url:") and rejected["status_code"] == 400


def test_a_rotated_secret_signs_beside_the_new_one_until_its_window_ends(
    events_stack: LocalStack,
) -> None:
    api = _api(events_stack)
    old = _secret(api)["secret"]
    status, rotated = api.call("POST", "/v1/webhooks/secret/rotate")
    assert status == 200, rotated
    new = rotated["secret"]
    assert new != old and rotated["previous_secret"] == old and rotated["previous_expires_at"]

    def delivered_to(hook: Receiver) -> tuple[dict[str, str], bytes]:
        request_id = api.submit({**PROMPT, "callback_url": hook.url})
        assert _attempts(api, request_id, 1)[0]["outcome"] == "delivered"
        return hook.requests[-1]

    with receiver([200]) as hook:
        headers, body = delivered_to(hook)
        assert len(headers["webhook-signature"].split(" ")) == 2
        for secret in (new, old):  # during the window, either verifies
            Webhook(secret).verify(body, headers)
        wait_for(lambda: "previous_secret" not in _secret(api), what="the window to end")
        headers, body = delivered_to(hook)
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)
