"""Posting to WebSocket connections through the API Gateway management API (aioboto3)."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

from headrace.core.aws import client_kwargs
from headrace.core.aws_calls import call_aws_async
from headrace.core.errors import Gone, HeadraceError
from headrace.core.settings import Settings

logger = logging.getLogger("headrace.stream")


class ConnectionPoster:
    """`post(endpoint, connection_id, data)`: True if delivered, False if the client is gone."""

    def __init__(self, session: Any, settings: Settings, exit_stack: AsyncExitStack) -> None:
        self._session = session
        self._settings = settings
        self._exit_stack = exit_stack
        self._clients: dict[str, Any] = {}

    async def _client(self, endpoint: str) -> Any:
        client = self._clients.get(endpoint)
        if client is None:
            kwargs = {**client_kwargs(self._settings), "endpoint_url": endpoint}
            client = await self._exit_stack.enter_async_context(
                self._session.client("apigatewaymanagementapi", **kwargs)
            )
            self._clients[endpoint] = client
        return client

    async def __call__(self, endpoint: str, connection_id: str, data: bytes) -> bool:
        client = await self._client(endpoint)
        try:
            await call_aws_async(client.post_to_connection, ConnectionId=connection_id, Data=data)
        except Gone:
            return False
        except HeadraceError as e:
            # Not gone, but not deliverable now: the event stays stored for a resubscribe.
            logger.warning("could not post to a connection: %s", e.detail)
        return True
