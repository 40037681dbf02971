"""Idempotent submit over the wire: the Idempotency-Key header on the three POST routes and the
`idempotency_key` field of a WebSocket `complete` frame, against the local stack."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest

from headrace import Completion
from headrace.api.idempotency import fingerprint
from headrace.client import configure
from headrace.core.contracts import CompletionRequest
from headrace.core.tables import idempotency as key_table
from headrace.core.tables import jobs as job_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.stack import LocalStack
from infra.provision import AwsClients
from tests.e2e.support import Api

QUERY = f"?model_endpoint_name={DEV_MODEL_NAME}"
ASYNC = "/v1/llm/completions-async" + QUERY
SYNC = "/v1/llm/completions-sync" + QUERY
STREAM = "/v1/llm/completions-stream" + QUERY


def unique_body(**fields: Any) -> dict[str, Any]:
    """A request whose prompt no other test sends, so its jobs can be counted."""
    return {"prompt": f"The mill {uuid.uuid4().hex}", "max_new_tokens": 3, **fields}


def with_key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def jobs_with_prompt(aws: AwsClients, stack: LocalStack, prompt: str) -> list[str]:
    """The request ids of every job item whose request holds `prompt` (a scan over the wire)."""
    assert stack.resources is not None
    found = []
    for page in aws.dynamodb.get_paginator("scan").paginate(
        TableName=stack.resources.table_name,
        FilterExpression="begins_with(pk, :job) AND contains(#r, :prompt)",
        ExpressionAttributeNames={"#r": "request"},
        ExpressionAttributeValues={":job": {"S": "job#"}, ":prompt": {"S": prompt}},
        ConsistentRead=True,
    ):
        found += [item["request_id"]["S"] for item in page["Items"]]
    return found


def test_a_repeat_answers_the_first_job_with_the_same_status(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    key, body = str(uuid.uuid4()), unique_body()
    first_status, first = api.call("POST", ASYNC, body, headers=with_key(key))
    again_status, again = api.call("POST", ASYNC, body, headers=with_key(key))
    assert (first_status, again_status) == (202, 202), (first, again)
    assert again["request_id"] == first["request_id"]
    # The same request written another way: the model in the body, a default sent, the IETF
    # draft's quoted form of the key.
    same = {**body, "model": DEV_MODEL_NAME, "temperature": 0.2}
    status, third = api.call(
        "POST", "/v1/llm/completions-async", same, headers=with_key(f'"{key}"')
    )
    assert (status, third["request_id"]) == (202, first["request_id"]), third
    assert jobs_with_prompt(aws, stack, body["prompt"]) == [first["request_id"]]
    api.wait(first["request_id"])
    status, done = api.call("POST", ASYNC, body, headers=with_key(key))
    assert (status, done) == (202, {"request_id": first["request_id"], "status": "SUCCEEDED"})


def test_a_sync_repeat_returns_the_first_jobs_result(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    key, body = str(uuid.uuid4()), unique_body(temperature=0.9)
    first_status, first = api.call("POST", SYNC, body, headers=with_key(key))
    again_status, again = api.call("POST", SYNC, body, headers=with_key(key))
    assert (first_status, again_status) == (200, 200), (first, again)
    assert again == first  # the same request_id and output: sampled once
    assert jobs_with_prompt(aws, stack, body["prompt"]) == [first["request_id"]]


def post_stream(stack: LocalStack, body: Any, key: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        stack.base_url + STREAM,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "x-api-key": stack.api_key or "",
            "content-type": "application/json",
            **with_key(key),
        },
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        lines = [raw.decode().strip() for raw in response]
    return [json.loads(line.removeprefix("data: ")) for line in lines if line]


def test_a_stream_repeat_streams_the_first_job_from_seq_0(
    stack: LocalStack, aws: AwsClients
) -> None:
    key, body = str(uuid.uuid4()), unique_body(temperature=0.9, max_new_tokens=12)
    first = post_stream(stack, body, key)
    again = post_stream(stack, body, key)
    assert [e["seq"] for e in first] == list(range(len(first)))
    assert first[-1]["output"]["finished"] is True
    assert again == first
    assert jobs_with_prompt(aws, stack, body["prompt"]) == [first[0]["request_id"]]


async def complete_over_websocket(stack: LocalStack, frame: dict[str, Any]) -> dict[str, Any]:
    """The ack of one `complete` frame and the job's events, or the error event refusing it."""
    url = stack.base_url.replace("http://", "ws://") + "/ws"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"x-api-key": stack.api_key or ""}) as ws,
    ):
        await ws.send_json({"action": "complete", "model": DEV_MODEL_NAME, **frame})
        frames: list[dict[str, Any]] = []
        ack: dict[str, Any] | None = None
        while True:
            got = json.loads((await ws.receive(timeout=30)).data)
            if got.get("request_id") is None and got.get("error"):
                return {"error": got["error"]}
            if got.get("type") == "accepted":
                ack = got
            else:
                frames.append(got)
            if ack is not None:
                events = [f for f in frames if f.get("request_id") == ack["request_id"]]
                if any(is_last(e) for e in events):
                    return {"ack": ack, "events": sorted(events, key=lambda e: e["seq"])}


def is_last(event: dict[str, Any]) -> bool:
    return bool(event.get("error") or (event.get("output") or {}).get("finished"))


def test_a_websocket_repeat_follows_the_first_job_from_seq_0(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    key, body = str(uuid.uuid4()), unique_body(temperature=0.9, max_new_tokens=12)
    frame = {**body, "idempotency_key": key}
    first = asyncio.run(complete_over_websocket(stack, frame))
    request_id = first["ack"]["request_id"]
    api.wait(request_id)
    again = asyncio.run(complete_over_websocket(stack, frame))
    assert again["ack"] == {**first["ack"], "status": "SUCCEEDED"}
    assert [e["seq"] for e in again["events"]] == list(range(len(first["events"])))
    assert again["events"] == first["events"]
    # One record serves every door: the same key over HTTP is the same job.
    status, answer = api.call("POST", ASYNC, body, headers=with_key(key))
    assert (status, answer["request_id"]) == (202, request_id)
    assert jobs_with_prompt(aws, stack, body["prompt"]) == [request_id]


def test_the_same_key_with_another_request_is_422(api: Api, stack: LocalStack) -> None:
    key, body = str(uuid.uuid4()), unique_body()
    assert api.call("POST", ASYNC, body, headers=with_key(key))[0] == 202
    for path, other in [
        (ASYNC, {**body, "max_new_tokens": 4}),
        (SYNC, {**body, "prompt": "Another prompt"}),
    ]:
        status, answer = api.call("POST", path, other, headers=with_key(key))
        assert status == 422, answer
        assert answer["detail"].startswith("Idempotency-Key: "), answer
        assert "different request" in answer["detail"]
    conflict = asyncio.run(
        complete_over_websocket(stack, {**body, "prompt": "Other", "idempotency_key": key})
    )
    assert conflict["error"]["status_code"] == 422, conflict
    assert conflict["error"]["content"]["error"].startswith("idempotency_key: ")


def test_twenty_concurrent_identical_submits_create_one_job(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    key, body = str(uuid.uuid4()), unique_body()
    start = threading.Barrier(20)

    def submit(_: int) -> tuple[int, Any]:
        start.wait(timeout=30)
        return api.call("POST", ASYNC, body, headers=with_key(key))

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(submit, range(20)))
    assert {status for status, _ in answers} == {202}, answers
    request_ids = {answer["request_id"] for _, answer in answers}
    assert len(request_ids) == 1
    assert jobs_with_prompt(aws, stack, body["prompt"]) == list(request_ids)


def test_another_api_key_with_the_same_idempotency_key_gets_its_own_job(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    assert stack.resources is not None
    other_key = f"hr-test-idempotency-{uuid.uuid4().hex[:12]}"
    aws.dynamodb.put_item(
        **job_table.put_api_key(stack.resources.table_name, other_key, name="other", now=0.0)
    )
    key, body = str(uuid.uuid4()), unique_body()
    other = Api(stack.base_url, other_key)
    mine = api.call("POST", ASYNC, body, headers=with_key(key))
    theirs = other.call("POST", ASYNC, body, headers=with_key(key))
    assert (mine[0], theirs[0]) == (202, 202), (mine, theirs)
    assert mine[1]["request_id"] != theirs[1]["request_id"]
    # Each key's repeat answers its own job.
    assert (
        api.call("POST", ASYNC, body, headers=with_key(key))[1]["request_id"]
        == (mine[1]["request_id"])
    )
    assert (
        other.call("POST", ASYNC, body, headers=with_key(key))[1]["request_id"]
        == (theirs[1]["request_id"])
    )
    found = jobs_with_prompt(aws, stack, body["prompt"])
    assert sorted(found) == sorted([mine[1]["request_id"], theirs[1]["request_id"]])


@pytest.mark.parametrize(
    "value",
    ["", "two words", "x" * 256, '"unbalanced', "back\\slash", "ünïcode", "tab\there"],
)
def test_a_bad_key_is_a_400_naming_the_header(api: Api, value: str) -> None:
    status, answer = api.call("POST", ASYNC, unique_body(), headers=with_key(value))
    assert status == 400, answer
    assert answer["detail"].startswith("Idempotency-Key: "), answer


def test_a_bad_key_in_a_frame_is_an_error_event_naming_the_field(stack: LocalStack) -> None:
    for value in [7, "", "x" * 256, "two words"]:
        answer = asyncio.run(
            complete_over_websocket(stack, {**unique_body(), "idempotency_key": value})
        )
        assert answer["error"]["status_code"] == 400, answer
        assert answer["error"]["content"]["error"].startswith("idempotency_key: "), answer


def test_a_refused_first_request_leaves_the_key_free(api: Api) -> None:
    # Over 256 KB as a job (the queue's limit) but under the prompt limit: refused (413) after
    # the key was claimed, so the claim must be given back.
    key = str(uuid.uuid4())
    too_big = unique_body(stop_sequences=["s" * 70_000] * 4)
    status, answer = api.call("POST", ASYNC, too_big, headers=with_key(key))
    assert status == 413, answer
    body = unique_body()
    status, answer = api.call("POST", ASYNC, body, headers=with_key(key))
    assert status == 202, answer
    repeat = api.call("POST", ASYNC, body, headers=with_key(key))[1]
    assert repeat["request_id"] == answer["request_id"]  # the key now holds this job


def claim_as_a_dead_request(
    stack: LocalStack, aws: AwsClients, key: str, body: dict[str, Any], *, started: float
) -> None:
    """What a submit that died after claiming the key (before enqueueing) left behind."""
    assert stack.resources is not None and stack.api_key is not None
    aws.dynamodb.put_item(
        **key_table.claim(
            stack.resources.table_name,
            owner=job_table.hash_api_key(stack.api_key),
            idempotency_key=key,
            fingerprint=fingerprint(CompletionRequest.model_validate(body), DEV_MODEL_NAME),
            token="a-request-that-died",
            now=started,
            in_progress_seconds=30.0,
            retention_seconds=3600,
        )
    )


def test_a_key_left_in_progress_is_taken_over_once_its_time_is_up(
    api: Api, stack: LocalStack, aws: AwsClients
) -> None:
    key, body = str(uuid.uuid4()), unique_body()
    claim_as_a_dead_request(stack, aws, key, body, started=time.time() - 60)
    status, answer = api.call("POST", ASYNC, body, headers=with_key(key))
    assert status == 202, answer
    assert jobs_with_prompt(aws, stack, body["prompt"]) == [answer["request_id"]]

    # Still in progress for about a second: the repeat waits for it, then takes the key over.
    key, body = str(uuid.uuid4()), unique_body()
    claim_as_a_dead_request(stack, aws, key, body, started=time.time() - 29)
    began = time.monotonic()
    status, answer = api.call("POST", ASYNC, body, headers=with_key(key))
    assert status == 202, answer
    assert time.monotonic() - began > 0.5
    assert jobs_with_prompt(aws, stack, body["prompt"]) == [answer["request_id"]]


@pytest.mark.usefixtures("isolated_config")
def test_the_clients_idempotency_key_gives_one_job_through_every_door(
    stack: LocalStack, aws: AwsClients
) -> None:
    configure(base_url=stack.base_url, api_key=stack.api_key)
    key, body = str(uuid.uuid4()), unique_body(temperature=0.9)
    fields = {"model": DEV_MODEL_NAME, **body, "idempotency_key": key}
    first = Completion.create(**fields)
    assert Completion.create(**fields) == first
    assert Completion.submit(**fields) == first.request_id
    streamed = list(Completion.create(**fields, stream=True))
    assert {e.request_id for e in streamed} == {first.request_id}
    assert "".join(e.output.text for e in streamed if e.output) == first.output.text

    async def awaited() -> tuple[str, set[str | None]]:
        response = await Completion.acreate(**fields)
        events = [e async for e in await Completion.acreate(**fields, stream=True)]
        return response.request_id, {e.request_id for e in events}

    assert asyncio.run(awaited()) == (first.request_id, {first.request_id})
    assert jobs_with_prompt(aws, stack, body["prompt"]) == [first.request_id]
