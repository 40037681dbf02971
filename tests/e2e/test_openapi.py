"""openapi.json is true to what the stack answers. (That it is committed, current, valid and
complete: tests/unit/test_openapi_document.py.)"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from headrace.api.openapi import openapi_document
from headrace.core import routes
from headrace.dev.model import DEV_MODEL_NAME
from tests.e2e.support import Api

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "openapi.json"


def conforms(schema_name: str, instance: Any) -> None:
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(instance)]
    assert errors == [], f"{schema_name}: {errors} in {instance}"


def response_schema(path: str, method: str, status: int) -> str:
    answer = openapi_document()["paths"][path][method]["responses"][str(status)]
    return str(answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1])


def test_the_stacks_answers_match_the_document(api: Api) -> None:
    body = {"prompt": "The river", "max_new_tokens": 3, "temperature": 0}
    conforms("CompletionRequest", body)
    query = f"?model_endpoint_name={DEV_MODEL_NAME}"
    checks: list[tuple[str, str, str, Any]] = [
        ("/v1/llm/completions-sync", "post", query, body),
        ("/v1/llm/completions-async", "post", query, body),
        ("/v1/llm/model-endpoints", "get", "", None),
        ("/v1/llm/completions-async", "post", query, {"prompt": "x", "top_k": -5}),
        ("/v1/llm/completions-async", "post", "?model_endpoint_name=nope", body),
    ]
    for path, method, suffix, payload in checks:
        status, answer = api.call(method.upper(), path + suffix, payload)
        conforms(response_schema(path, method, status), answer)
        if path.endswith("-async") and status == 202:
            request_id = answer["request_id"]
    job = api.wait(request_id)
    conforms(response_schema("/v1/llm/completions/{request_id}", "get", 200), job)
    for name, status in ((DEV_MODEL_NAME, 200), ("nope", 404)):
        answered, answer = api.call("GET", f"/v1/llm/model-endpoints/{name}")
        assert answered == status
        conforms(response_schema(routes.MODEL_ENDPOINT, "get", status), answer)


def test_the_streamed_events_match_the_document(api: Api) -> None:
    request = urllib.request.Request(
        f"{api.base_url}{routes.COMPLETIONS_STREAM}?model_endpoint_name={DEV_MODEL_NAME}",
        data=json.dumps({"prompt": "The mill", "max_new_tokens": 8}).encode(),
        headers={"x-api-key": str(api.api_key), "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        lines = response.read().decode().splitlines()
    events = [json.loads(line.removeprefix("data: ")) for line in lines if line]
    assert events and events[-1]["output"]["finished"]
    schema = openapi_document()["paths"][routes.COMPLETIONS_STREAM]["post"]["responses"]["200"][
        "content"
    ]
    data = schema["text/event-stream"]["schema"]["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    name = data["contentSchema"]["$ref"].rsplit("/", 1)[1]
    for event in events:
        conforms(name, event)


def test_the_gateway_serves_the_document(api: Api) -> None:
    status, served = api.call("GET", "/openapi.json")
    assert status == 200
    assert served == json.loads(COMMITTED.read_text())
