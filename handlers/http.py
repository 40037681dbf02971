"""What every HTTP handler shares: the typed payload-2.0 event, auth, responses, error mapping."""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from headrace.api.auth import api_key_from_headers, authenticate
from headrace.api.services import ApiServices, default_services
from headrace.core.errors import HeadraceError
from headrace.core.logs import request_context

logger = logging.getLogger("headrace.api")

camel_case = ConfigDict(alias_generator=AliasGenerator(validation_alias=to_camel), extra="ignore")


class HttpDetails(BaseModel):
    model_config = camel_case
    method: str
    path: str
    source_ip: str | None = None


class HttpRequestContext(BaseModel):
    model_config = camel_case
    request_id: str
    http: HttpDetails


class HttpApiEvent(BaseModel):
    """API Gateway HTTP API event, payload format 2.0."""

    model_config = camel_case
    version: str = Field(pattern=r"^2\.0$")
    route_key: str
    raw_path: str
    raw_query_string: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    query_string_parameters: dict[str, str] | None = None
    path_parameters: dict[str, str] | None = None
    body: str | None = None
    is_base64_encoded: bool = False
    request_context: HttpRequestContext

    def body_bytes(self) -> bytes:
        if self.body is None:
            return b""
        return base64.b64decode(self.body) if self.is_base64_encoded else self.body.encode()

    def query(self, name: str) -> str | None:
        return (self.query_string_parameters or {}).get(name)

    def api_key(self) -> str | None:
        return api_key_from_headers(self.headers)


def json_response(status: int, body: Any, request_id: str | None = None) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    return {"statusCode": status, "headers": headers, "body": json.dumps(body)}


Route = Callable[[HttpApiEvent, ApiServices, str], dict[str, Any]]


def endpoint(route: Route) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """Lambda entry point around `route(event, services, owner)`: parse, authenticate, map errors.

    Domain errors become their status with `{"detail": ...}`; anything else is a 500 whose
    detail names the gateway request id, never a traceback.
    """

    @functools.wraps(route)
    def handler(raw_event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        try:
            event = HttpApiEvent.model_validate(raw_event)
        except ValidationError:
            logger.exception("event is not an API Gateway HTTP API payload 2.0 event")
            return json_response(500, {"detail": "internal error: malformed gateway event"})
        gateway_request_id = event.request_context.request_id
        with request_context(gateway_request_id):
            try:
                svc = default_services()
                owner = authenticate(svc, event.api_key())
                return route(event, svc, owner)
            except HeadraceError as e:
                if e.status_code >= 500:
                    logger.warning("request failed: %s", e.detail)
                return json_response(e.status_code, {"detail": e.detail})
            except Exception:
                logger.exception("unhandled error")
                return json_response(
                    500, {"detail": f"internal error (gateway request {gateway_request_id})"}
                )

    return handler
