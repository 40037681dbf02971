"""What the Lambda Python runtime gives a handler locally: a context object and JSON marshalling.

The local gateway calls handlers in-process, so this mirrors the parts of the runtime a handler
can observe: the `context` argument, the event arriving as freshly parsed JSON, and the return
value crossing the boundary as JSON (DynamoDB `Decimal`s included, as the runtime encodes them).
"""

from __future__ import annotations

import decimal
import json
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ACCOUNT_ID = "123456789012"
# Synchronous invocation limits of Lambda: request and response payloads of 6 MB.
LAMBDA_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024


def local_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@dataclass
class LambdaContext:
    """Duck-types `awslambdaric.lambda_context.LambdaContext` (the attributes handlers use)."""

    function_name: str
    # A string, as in the real runtime (it comes from AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
    memory_limit_in_mb: str
    timeout_seconds: float
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    region: str = field(default_factory=local_region)
    identity: Any = None
    client_context: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not self._deadline:
            self._deadline = time.monotonic() + self.timeout_seconds
        day = time.strftime("%Y/%m/%d", time.gmtime())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"{day}/[{self.function_version}]{secrets.token_hex(16)}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _RuntimeEncoder(json.JSONEncoder):
    """The Lambda Python runtime's encoder also accepts `Decimal` (what boto3 DynamoDB returns)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, decimal.Decimal):
            return int(o) if o == o.to_integral_value() else float(o)
        return super().default(o)


def marshal_result(result: Any) -> bytes:
    """The handler's return value as the bytes of the Lambda response payload.

    Raises TypeError/ValueError when the runtime could not serialize it (Runtime.MarshalError).
    """
    return json.dumps(result, cls=_RuntimeEncoder, ensure_ascii=False).encode("utf-8")
