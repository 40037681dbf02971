"""Posting to WebSocket connections through the API Gateway management API.

A post is `POST {endpoint}/@connections/{id}` signed with SigV4 for `execute-api`: the
request `apigatewaymanagementapi.post_to_connection` sends. The worker sends it itself, with
botocore's signer over one keep-alive aiohttp pool, rather than through an aiobotocore client:
a followed stream posts to every follower at every flush, and the client's per-call machinery
(serializing, hooks, endpoint rules, user agent, parsing) cost several times the signing and
the HTTP exchange, all of it on the worker's event loop, the thread that also takes the GIL
from the decoder's callback.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from yarl import URL

from headrace.core.aws_calls import AWS_RETRY
from headrace.core.errors import HeadraceError, Throttled, TransientError
from headrace.core.settings import Settings

logger = logging.getLogger("headrace.stream")

SERVICE = "execute-api"
GONE = 410


class ConnectionPoster:
    """`post(endpoint, connection_id, data)`: True if delivered, False if the client is gone."""

    def __init__(self, session: Any, settings: Settings, exit_stack: AsyncExitStack) -> None:
        self._session = session  # aioboto3: its credentials (refreshed when they expire)
        self._settings = settings
        self._exit_stack = exit_stack
        self._http: aiohttp.ClientSession | None = None
        self._credentials: Any = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            # As many connections as the AWS clients keep: posts of all streams share them.
            connector = aiohttp.TCPConnector(limit=self._settings.aws_max_pool_connections)
            timeout = aiohttp.ClientTimeout(total=30, connect=5)
            self._http = await self._exit_stack.enter_async_context(
                aiohttp.ClientSession(connector=connector, timeout=timeout)
            )
            self._credentials = await self._session.get_credentials()
        return self._http

    async def __call__(self, endpoint: str, connection_id: str, data: bytes) -> bool:
        try:
            async for attempt in AWS_RETRY.async_retrying():
                with attempt:
                    return await self._post(endpoint, connection_id, data)
        except HeadraceError as e:
            # Not gone, but not deliverable now: the event stays stored for a resubscribe.
            logger.warning("could not post to a connection: %s", e.detail)
        return True

    async def _post(self, endpoint: str, connection_id: str, data: bytes) -> bool:
        http = await self._client()
        url = f"{endpoint.rstrip('/')}/@connections/{quote(connection_id, safe='')}"
        request = AWSRequest(method="POST", url=url, data=data)
        if self._credentials is not None:
            credentials = await self._credentials.get_frozen_credentials()
            SigV4Auth(credentials, SERVICE, self._settings.region).add_auth(request)
        try:
            # Sent as signed: the URL is not quoted again on its way out.
            target = URL(url, encoded=True)
            async with http.post(target, data=data, headers=dict(request.headers)) as answer:
                body = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransientError(f"post to a connection: {e!r}") from e
        if status == GONE:
            return False
        if status == 429:
            raise Throttled("post to a connection: throttled")
        if status >= 500:
            raise TransientError(f"post to a connection: {status}")
        if status >= 300:
            raise HeadraceError(f"post to a connection: {status} {body[:200]!r}")
        return True
