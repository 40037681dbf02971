"""Cancelling and retrying a job over HTTP, sync and async."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from headrace.client._config import ClientConfig
from headrace.client._http import arequest, request
from headrace.core import routes
from headrace.core.contracts import SubmitResponse
from headrace.core.control import CancelResponse

if TYPE_CHECKING:
    import aiohttp


def retry_path(request_id: str) -> str:
    return routes.COMPLETION_RETRY.format(request_id=quote(request_id, safe=""))


def retry(config: ClientConfig, request_id: str) -> SubmitResponse:
    _, answer = request(config, "POST", retry_path(request_id))
    return SubmitResponse.model_validate(answer)


async def aretry(
    session: aiohttp.ClientSession, config: ClientConfig, request_id: str
) -> SubmitResponse:
    _, answer = await arequest(session, config, "POST", retry_path(request_id))
    return SubmitResponse.model_validate(answer)


def cancel_path(request_id: str) -> str:
    return routes.COMPLETION_CANCEL.format(request_id=quote(request_id, safe=""))


def cancel(config: ClientConfig, request_id: str) -> CancelResponse:
    _, answer = request(config, "POST", cancel_path(request_id))
    return CancelResponse.model_validate(answer)


async def acancel(
    session: aiohttp.ClientSession, config: ClientConfig, request_id: str
) -> CancelResponse:
    _, answer = await arequest(session, config, "POST", cancel_path(request_id))
    return CancelResponse.model_validate(answer)
