"""The pure parts of idempotent submit: the key's rules, the request's fingerprint, the key
record's writes, the client's use of the key. (Over the wire: tests/e2e/test_idempotency_e2e.py.)"""

from __future__ import annotations

import re

import pytest

from headrace.api.idempotency import MAX_KEY_LENGTH, fingerprint, key_from_headers, parse_key
from headrace.api.openapi import openapi_document
from headrace.client._http import _is_idempotent
from headrace.client.completion import _complete_frame
from headrace.core import routes
from headrace.core.contracts import CompletionRequest
from headrace.core.errors import InvalidRequest
from headrace.core.tables import idempotency as key_table

GOOD_KEYS = [
    "8e03978e-40d5-43e8-bc93-6894a57f9324",
    "x",
    "x" * MAX_KEY_LENGTH,
    "01HV6Z1Q7K3M9V2E4X8Y5T0R6S",
    "dGVzdA==",
    "a/b+c:d@e~f[g]h!#$%&'()*,.;<=>?^_`{|}",
]
BAD_KEYS = [
    "",
    "x" * (MAX_KEY_LENGTH + 1),
    "two words",
    " leading",
    "tab\there",
    '"unbalanced',
    'in"side',
    "back\\slash",
    "ünïcode",
    "\ufffd",
    "\udcff",
    "\x00",
    "\x7f",
    '""',
    '"' + "x" * (MAX_KEY_LENGTH + 1) + '"',
]


@pytest.mark.parametrize("value", GOOD_KEYS)
def test_good_keys_are_taken_as_they_are_and_in_quotes(value: str) -> None:
    assert parse_key(value, name="Idempotency-Key").value == value
    assert parse_key(f'"{value}"', name="Idempotency-Key").value == value


@pytest.mark.parametrize("value", [*BAD_KEYS, 7, None, ["k"], {"k": 1}, 1.5, True])
def test_every_bad_key_is_an_invalid_request_naming_it(value: object) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_key(value, name="idempotency_key")
    assert raised.value.status_code == 400
    assert raised.value.detail.startswith("idempotency_key: ")


def test_the_header_is_optional_and_named_in_errors() -> None:
    assert key_from_headers({"x-api-key": "k"}) is None
    assert key_from_headers({"idempotency-key": "abc"}) == parse_key("abc", name="Idempotency-Key")
    with pytest.raises(InvalidRequest, match=r"^Idempotency-Key: "):
        key_from_headers({"idempotency-key": "a b"})


def test_the_documented_pattern_is_the_rule() -> None:
    parameters = openapi_document()["paths"][routes.COMPLETIONS_ASYNC]["post"]["parameters"]
    (header,) = [p for p in parameters if p["name"] == "Idempotency-Key"]
    pattern = re.compile(header["schema"]["pattern"])
    for value in [*GOOD_KEYS, *(f'"{k}"' for k in GOOD_KEYS), *BAD_KEYS]:
        try:
            parse_key(value, name="k")
            accepted = True
        except InvalidRequest:
            accepted = False
        assert bool(pattern.match(value)) is accepted, value


def request(**fields: object) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": "The river", **fields})


def test_the_fingerprint_is_of_the_canonical_request() -> None:
    base = fingerprint(request(), "tiny")
    assert len(base) == 64
    # The model named in the body or by the route, and a default sent or left out: the same.
    assert fingerprint(request(model="tiny"), "tiny") == base
    assert fingerprint(request(max_new_tokens=20, temperature=0.2), "tiny") == base
    assert fingerprint(request(stop_sequences=["a", "b"]), "tiny") == fingerprint(
        CompletionRequest.model_validate_json(
            '{"stop_sequences": ["a", "b"], "prompt": "The river"}'
        ),
        "tiny",
    )


@pytest.mark.parametrize(
    ("fields", "model"),
    [
        ({"prompt": "The river."}, "tiny"),
        ({}, "other"),
        ({"max_new_tokens": 21}, "tiny"),
        ({"temperature": 0.0}, "tiny"),
        ({"stop_sequences": ["b", "a"]}, "tiny"),
        ({"return_token_log_probs": True}, "tiny"),
    ],
)
def test_any_other_request_has_another_fingerprint(fields: dict[str, object], model: str) -> None:
    assert fingerprint(request(**fields), model) != fingerprint(request(), "tiny")


def test_a_key_record_is_scoped_to_its_owner_and_stores_no_key() -> None:
    key = "secret-looking key"
    mine, theirs = key_table.record_key("owner-a", key), key_table.record_key("owner-b", key)
    assert mine != theirs
    assert mine == key_table.record_key("owner-a", key)
    assert key not in mine["pk"]["S"]
    assert mine["pk"]["S"].startswith("idem#owner-a#")


def test_a_claim_takes_a_free_key_an_expired_one_or_one_left_in_progress() -> None:
    claim = key_table.claim(
        "t",
        owner="o",
        idempotency_key="k",
        fingerprint="f",
        token="tok",
        now=1000.5,
        in_progress_seconds=30,
        retention_seconds=86400,
    )
    condition = claim["ConditionExpression"]
    assert "attribute_not_exists(pk)" in condition
    assert "expires_at < :now_s" in condition
    assert "#state = :in_progress AND in_progress_until < :now" in condition
    record = key_table.KeyRecord.from_item(claim["Item"])
    assert record == key_table.KeyRecord(
        state=key_table.KeyState.IN_PROGRESS,
        fingerprint="f",
        token="tok",
        in_progress_until=1030.5,
        expires_at=87400,
        request_id=None,
    )


def test_only_the_holder_completes_or_releases_a_claim() -> None:
    done = key_table.complete("t", owner="o", idempotency_key="k", token="tok", request_id="r")
    freed = key_table.release("t", owner="o", idempotency_key="k", token="tok")
    for write in (done, freed):
        assert write["ConditionExpression"] == "#state = :in_progress AND #token = :token"
        assert write["ExpressionAttributeValues"][":token"] == {"S": "tok"}
    assert done["ExpressionAttributeValues"][":request_id"] == {"S": "r"}


def test_the_client_resends_a_post_only_with_a_key() -> None:
    assert _is_idempotent("GET", None)
    assert not _is_idempotent("POST", None)
    assert not _is_idempotent("POST", {"x-other": "1"})
    assert _is_idempotent("POST", {"Idempotency-Key": "k"})


def test_the_clients_complete_frame_carries_the_key_as_a_field() -> None:
    body = {"prompt": "p"}
    assert _complete_frame("m", body, None) == {"model": "m", "prompt": "p"}
    assert _complete_frame("m", body, "k") == {"model": "m", "prompt": "p", "idempotency_key": "k"}
