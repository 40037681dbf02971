"""Worker process: load and warm the models (readiness gate), then consume the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp

from headrace.core.aws import boto3_client, client_kwargs, fixed_user_agent
from headrace.core.aws_calls import call_aws_async
from headrace.core.errors import HeadraceError, ModelLoadError
from headrace.core.logs import configure_logging
from headrace.core.settings import Settings
from worker.artifacts import fetch_model
from worker.connections import ConnectionPoster
from worker.consumer import QueueConsumer
from worker.decoding import TextCodec
from worker.engine import Engine, EngineConfig, default_batching
from worker.scheduler import ModelRunner
from worker.task_protection import AgentEndpoint, TaskProtection
from worker.tuning import candidate_widths, choose_batch_width

logger = logging.getLogger("headrace.worker")


def load_runners(settings: Settings) -> dict[str, ModelRunner]:
    """Fetch, load and warm every model this worker serves. Raises ModelLoadError."""
    names = settings.served_models()
    if not names:
        raise ModelLoadError(
            "no model to serve: set HEADRACE_MODEL_ZOO (and HEADRACE_WORKER_MODELS)"
        )
    s3 = boto3_client(settings, "s3")
    config = EngineConfig(
        device=settings.device,
        compute_type=settings.compute_type,
        inter_threads=settings.inter_threads,
        intra_threads=settings.intra_threads,
    )
    runners: dict[str, ModelRunner] = {}
    for name in names:
        location = settings.model_zoo.get(name)
        if location is None:
            raise ModelLoadError(f"model {name!r} is not in the model zoo")
        model_dir = fetch_model(location, Path(settings.model_cache_dir), s3)
        engine = Engine(model_dir, config)
        codec = TextCodec.from_file(
            model_dir / "tokenizer.json", bos_token=engine.bos_token, eos_token=engine.eos_token
        )
        defaults = default_batching(engine.device)
        width = settings.max_batch_size
        step_seconds = None  # an explicit width is the only one
        if not width:  # timed on this model and device (worker/tuning.py)
            width, trials = choose_batch_width(
                engine, codec, candidate_widths(engine.device), model=name
            )
            step_seconds = {t.width: t.step_s for t in trials if t.width <= width}
        runner = ModelRunner(
            name,
            engine,
            codec,
            max_batch_size=width,
            max_batch_wait=_chosen(settings.max_batch_wait_ms, defaults.max_batch_wait_ms) / 1000,
            max_batch_hold=_chosen(settings.max_batch_hold_ms, defaults.max_batch_hold_ms) / 1000,
            prefetch_per_replica=settings.prefetch_per_replica or defaults.prefetch_per_replica,
            step_seconds=step_seconds,
        )
        runner.warm_up()
        runners[name] = runner
        logger.info("model ready", extra={"model": name})
    return runners


def _chosen(setting_ms: int, default_ms: int) -> int:
    return setting_ms if setting_ms >= 0 else default_ms  # -1: the device's default


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    runners = await asyncio.to_thread(load_runners, settings)
    worker_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    session = aioboto3.Session()
    aws = client_kwargs(settings, validate_parameters=False, user_agent=fixed_user_agent("worker"))
    async with AsyncExitStack() as stack:
        sqs = await stack.enter_async_context(session.client("sqs", **aws))
        dynamodb = await stack.enter_async_context(session.client("dynamodb", **aws))
        # The heartbeat's own clients: its calls never queue behind the worker's other traffic
        # for a connection (a burst of claims and stream flushes can hold every one of them).
        heartbeat = (
            await stack.enter_async_context(session.client("sqs", **aws)),
            await stack.enter_async_context(session.client("dynamodb", **aws)),
        )
        found = await call_aws_async(sqs.get_queue_url, QueueName=settings.queue_name)
        queue_url = found["QueueUrl"]
        post = ConnectionPoster(session, settings, stack)
        protection = None
        if settings.ecs_agent_uri:
            agent = aiohttp.ClientSession()
            stack.push_async_callback(agent.close)
            protection = TaskProtection(
                AgentEndpoint(settings.ecs_agent_uri, agent).send,
                expires_minutes=settings.task_protection_minutes,
                idle_seconds=settings.task_protection_idle_seconds,
            )
        consumer = QueueConsumer(
            settings,
            sqs=sqs,
            dynamodb=dynamodb,
            queue_url=queue_url,
            runners=runners,
            worker_id=worker_id,
            post=post,
            dlq_url=await _queue_url_or_none(sqs, settings.dlq_name, "dead-letter queue"),
            batch_queue_url=await _queue_url_or_none(sqs, settings.batch_queue_name, "batch lane"),
            batch_dlq_url=await _queue_url_or_none(
                sqs, settings.batch_dlq_name, "batch lane's dead-letter queue"
            ),
            heartbeat_clients=heartbeat,
            protection=protection,
        )
        try:
            await consumer.run(stop)
        finally:
            for runner in runners.values():
                runner.engine.close()


async def _queue_url_or_none(sqs: Any, name: str, what: str) -> str | None:
    """The URL of a queue the worker can do without (a dead-letter queue it watches, the batch
    lane); None, with a warning, if it is not there."""
    try:
        found = await call_aws_async(sqs.get_queue_url, QueueName=name)
    except HeadraceError as e:
        logger.warning("not using the %s %s: %s", what, name, e.detail)
        return None
    return str(found["QueueUrl"])


def main(settings: Settings | None = None) -> int:
    settings = settings or Settings()
    configure_logging(settings.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(run())
    except ModelLoadError as e:
        logger.error("worker not started: %s", e.detail)
        return 2
    except HeadraceError as e:
        logger.error("worker failed: %s", e.detail)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
