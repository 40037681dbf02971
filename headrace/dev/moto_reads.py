"""DynamoDB's item reads, as the local AWS endpoint answers them (headrace/dev/moto_server.py).

moto builds the items of a GetItem, BatchGetItem, Query or Scan answer in DynamoDB's wire form
already, then passes the whole answer through its generic serializer, which walks every
attribute of every item through the service's shapes: most of the endpoint's CPU for the
worker's check for new subscribers and cancels (a BatchGetItem of every job it holds, twice a
second). The answer is dumped as JSON directly, binary values in base64 and times in epoch
seconds as the service's JSON has them (moto_streams.wire_value), members that are None left
out as the serializer leaves them out.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult
from moto.dynamodb.responses import DynamoHandler

from headrace.dev.moto_streams import wire_value

READS = ("get_item", "batch_get_item", "query", "scan")


def patch_reads() -> None:
    for name in READS:
        setattr(DynamoHandler, name, _answered_directly(getattr(DynamoHandler, name)))


def _answered_directly(
    action: Callable[[DynamoHandler], ActionResult],
) -> Callable[[DynamoHandler], str]:
    @functools.wraps(action)
    def read(handler: DynamoHandler) -> str:
        answer: dict[str, Any] = action(handler).result  # type: ignore[assignment]
        present = {key: value for key, value in answer.items() if value is not None}
        return json.dumps(present, default=wire_value)

    return read
