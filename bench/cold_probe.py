"""One cold-start sample, run by `bench.cold_start` as `python -I bench/cold_probe.py` in a fresh
interpreter: it reads a JSON spec on stdin and prints one result line.

Nothing but the standard library is imported before the clock starts, so the import measured is
the whole import of what a handler (or the boto3 baseline) needs. The spec is read before the
clock too: the Lambda runtime has parsed the event before it calls the handler.

Spec, handler mode: {"mode": "handler", "root": DIR, "handler": "handlers.<module>.<function>",
"event": {...}}: DIR goes first on sys.path; the handler module is imported, then called once.

Spec, baseline mode: {"mode": "baseline", "region": ..., "endpoint_url": ..., "config": {...},
"clients": ["dynamodb", "sqs"], "call": {"service": ..., "operation": ..., "params": {...}} or
null}: `import boto3`, one session, the clients, then the one call.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

RESULT_PREFIX = "COLD_START_RESULT "


class _Context:
    """The attributes of the Lambda runtime's context object that a handler may read."""

    function_name = "cold-start"
    function_version = "$LATEST"
    memory_limit_in_mb = "512"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cold-start"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _ms(start: int, end: int) -> float:
    return (end - start) / 1e6


def handler_sample(spec: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, spec["root"])
    module_name, _, function_name = spec["handler"].rpartition(".")
    started = time.perf_counter_ns()
    module = importlib.import_module(module_name)
    imported = time.perf_counter_ns()
    response = getattr(module, function_name)(spec["event"], _Context())
    called = time.perf_counter_ns()
    return {
        "import_ms": _ms(started, imported),
        "call_ms": _ms(imported, called),
        "status": response.get("statusCode") if isinstance(response, dict) else None,
        "module_file": module.__file__,
        "modules": len(sys.modules),
    }


def baseline_sample(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter_ns()
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    clients = {
        name: session.client(
            name,
            region_name=spec["region"],
            endpoint_url=spec["endpoint_url"],
            config=Config(**spec["config"]),
        )
        for name in spec["clients"]
    }
    ready = time.perf_counter_ns()
    call = spec["call"]
    status = None
    if call is not None:
        answer = getattr(clients[call["service"]], call["operation"])(**call["params"])
        status = answer["ResponseMetadata"]["HTTPStatusCode"]
    called = time.perf_counter_ns()
    return {
        "clients_ms": _ms(started, ready),  # import boto3, the session, the clients
        "call_ms": _ms(ready, called),
        "status": status,
        "modules": len(sys.modules),
    }


def main() -> int:
    spec = json.load(sys.stdin)
    sample = handler_sample(spec) if spec["mode"] == "handler" else baseline_sample(spec)
    print(RESULT_PREFIX + json.dumps(sample), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
