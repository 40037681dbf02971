"""openapi.json: committed, current, valid, complete. (That the stack answers as it says:
tests/e2e/test_openapi.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate

from headrace.api.openapi import openapi_document, render
from headrace.core import routes
from infra.template import http_routes, load_template

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "openapi.json"


def test_the_committed_document_is_current() -> None:
    assert COMMITTED.read_text() == render(), (
        "openapi.json is stale: regenerate it with `python -m headrace.api.openapi > openapi.json`"
    )


def test_the_document_is_valid_openapi() -> None:
    validate(json.loads(COMMITTED.read_text()))


def test_every_route_is_documented() -> None:
    declared = {(r.method.lower(), r.path) for r in http_routes(load_template())}
    declared.add(("post", routes.COMPLETIONS_STREAM))  # the local gateway's streaming route
    documented = {
        (method, path) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert documented == declared


def test_security_is_the_api_key_header_or_basic_auth() -> None:
    document = openapi_document()
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert schemes["BasicAuth"]["scheme"] == "basic"
    assert schemes["BearerAuth"]["scheme"] == "bearer"  # OpenAI's SDKs
    assert document["security"] == [{"ApiKeyHeader": []}, {"BasicAuth": []}, {"BearerAuth": []}]
