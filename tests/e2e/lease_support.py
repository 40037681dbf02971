"""What the lease tests share: a stack whose SQS backstop sits well above the worker's attempts,
a lost worker's job and stream written as it left them, and readers of what got stored."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import aiohttp
import boto3
import ctranslate2
from tokenizers import Tokenizer

from headrace.core.contracts import CompletionRequest, JobMessage, JobStatus, StreamEvent
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams as stream_table
from headrace.dev.model import DEV_MODEL_NAME
from headrace.dev.moto import MOTO_CREDENTIALS
from headrace.dev.stack import LocalStack, StackOptions
from infra.provision import AwsClients
from tests.e2e.support import FAST_SETTINGS, Api, log_lines

# A lapsed lease is retried within seconds; SQS's receives are a backstop far above attempts.
LEASE_PARAMETERS = {"VisibilityTimeoutSeconds": "3", "MaxReceiveCount": "10"}
LEASE_SETTINGS = {
    **FAST_SETTINGS,
    "HEADRACE_MAX_ATTEMPTS": "3",
    "HEADRACE_DEAD_LETTER_CHECK_SECONDS": "1",
    # Frequent flushes: a worker writes its stream often, so a lost one would be caught at it.
    "HEADRACE_STREAM_UNFOLLOWED_FLUSH_MS": "200",
}
LOST_WORKER = "lost-worker"  # never had a lease: its jobs are free to take over

Frame = dict[str, Any]


class Follower:
    """A WebSocket client following one job from seq 0, in a thread of its own: every frame
    it gets, copies included."""

    def __init__(self, stack: LocalStack, request_id: str) -> None:
        self.stack = stack
        self.request_id = request_id
        self.frames: list[Frame] = []
        self.subscribed = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._follow()), daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the follower never got the last event"

    async def _follow(self) -> None:
        headers = {"x-api-key": self.stack.api_key}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(self.stack.ws_url, headers=headers) as ws,
        ):
            subscribe = {"action": "subscribe", "request_id": self.request_id, "from_seq": 0}
            await ws.send_str(json.dumps(subscribe))
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                message = await ws.receive(timeout=deadline - time.monotonic())
                if message.type is not aiohttp.WSMsgType.TEXT:
                    return  # closed: join() tells whether the last event came
                frame: Frame = json.loads(message.data)
                if frame.get("type") == "accepted":
                    self.subscribed.set()
                if frame.get("request_id") != self.request_id or "seq" not in frame:
                    continue
                self.frames.append(frame)
                if frame.get("error") or (frame.get("output") or {}).get("finished"):
                    return


def lease_stack(
    home: Path, logs_dir: Path, *, workers: int, settings: dict[str, str] | None = None
) -> LocalStack:
    stack = LocalStack(
        StackOptions(
            home=home,
            logs_dir=logs_dir,
            gateway_port=0,
            parameters=dict(LEASE_PARAMETERS),
            settings_env={**LEASE_SETTINGS, **(settings or {})},
        )
    )
    stack.start(workers=workers)
    return stack


def aws_clients(stack: LocalStack) -> AwsClients:
    session = boto3.session.Session(region_name="us-east-1", **MOTO_CREDENTIALS)
    return AwsClients.create(stack.aws_endpoint_url, session=session)


def messages(path: Path, request_id: str) -> list[str]:
    return [str(line["message"]) for line in log_lines(path, request_id)]


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def decoding_job(
    stack: LocalStack, aws: AwsClients, api: Api, prompt: str, max_new_tokens: int
) -> tuple[subprocess.Popen[bytes], str]:
    """A worker started, and a greedy job it is decoding: (the worker, the job's request id),
    once two of the job's chunks are stored."""
    assert stack.resources is not None
    worker = stack.start_worker()
    stack.wait_for_worker()
    request = {"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": 0}
    request_id = api.submit(request)
    table = stack.resources.table_name
    wait_until(lambda: len(stored_items(aws, table, request_id)) >= 2, 60, "first chunks")
    return worker, request_id


def messages_left(aws: AwsClients, queue_url: str) -> int:
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def stored_items(aws: AwsClients, table: str, request_id: str) -> list[job_table.Item]:
    query: dict[str, Any] = stream_table.query_chunks(table, request_id)
    items: list[job_table.Item] = []
    while True:
        answer = aws.dynamodb.query(**query)
        items += cast(list[job_table.Item], answer["Items"])
        if "LastEvaluatedKey" not in answer:
            return items
        query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def stored_events(aws: AwsClients, table: str, request_id: str) -> list[StreamEvent]:
    items = stored_items(aws, table, request_id)
    return [stream_table.StoredChunk.from_item(i).event for i in items]


def assert_one_stream(events: list[StreamEvent]) -> None:
    """Seqs 0..n-1, and one last event (finished or failed), at the end."""
    assert [e.seq for e in events] == list(range(len(events)))
    assert [i for i, e in enumerate(events) if e.is_last] == [len(events) - 1]


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.output.text for e in events if e.output is not None)


def greedy_text(model_dir: Path, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """What the engine itself gives, greedy, in one uninterrupted run: (text, tokens)."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    start = ["<|endoftext|>", *tokenizer.encode(prompt).tokens]
    generator = ctranslate2.Generator(str(model_dir), device="cpu", intra_threads=1)
    try:
        result = generator.generate_batch(
            [start], max_length=max_new_tokens, sampling_topk=1, include_prompt_in_result=False
        )[0]
    finally:
        del generator
    ids = [i for i in result.sequences_ids[0] if i != tokenizer.token_to_id("<|endoftext|>")]
    return tokenizer.decode(ids), len(ids)


def record_job(
    aws: AwsClients,
    stack: LocalStack,
    request: dict[str, Any],
    *,
    attempts: int = 0,
    worker: str | None = LOST_WORKER,
) -> JobMessage:
    """A job RUNNING on its `attempts`-th attempt, leased to `worker` (by default one that is
    gone), or QUEUED (worker None), as the submit wrote it; its message."""
    assert stack.resources is not None
    table = stack.resources.table_name
    job = JobMessage(
        request_id=str(uuid.uuid4()),
        owner=job_table.hash_api_key(stack.api_key),
        model=DEV_MODEL_NAME,
        request=CompletionRequest(**request, model=DEV_MODEL_NAME),
        submitted_at=time.time(),
    )
    aws.dynamodb.put_item(
        **job_table.put_new_job(
            table,
            request_id=job.request_id,
            owner=job.owner,
            model=job.model,
            request=job.request,
            now=time.time(),
            ttl_seconds=3600,
        )
    )
    if worker is None:
        return job
    aws.dynamodb.update_item(
        TableName=table,
        Key=job_table.job_key(job.request_id),
        UpdateExpression="SET #s = :running, lease_owner = :worker, attempts = :n, epoch = :n",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":running": {"S": JobStatus.RUNNING.value},
            ":worker": {"S": worker},
            ":n": {"N": str(attempts)},
        },
    )
    return job


def store_lost_stream(
    aws: AwsClients,
    table: str,
    request_id: str,
    chunks: list[stream_table.StoredChunk],
    *,
    epoch: int,
    ended: bool = False,
) -> None:
    """`chunks` as the lost worker of `epoch` left them: all committed to the stream's head, all
    but the last stored as chunk items (it died between the two); or, `ended`, every one stored
    (its last flush went with the job's final state, one transaction)."""
    items = [_chunk_put(table, request_id, seq, c, epoch)["Item"] for seq, c in enumerate(chunks)]
    for item in items if ended else items[:-1]:
        aws.dynamodb.put_item(TableName=table, Item=item)
    head = {
        **stream_table.stream_head_key(request_id),
        "epoch": {"N": str(epoch)},
        "next_seq": {"N": str(len(items))},
    }
    if not ended:
        head["tail"] = {"S": json.dumps(items[-1:])}
    aws.dynamodb.put_item(TableName=table, Item=head)


def _chunk_put(
    table: str, request_id: str, seq: int, chunk: stream_table.StoredChunk, epoch: int
) -> dict[str, Any]:
    return stream_table.put_chunk(
        table,
        request_id=request_id,
        event=chunk.event.model_copy(update={"request_id": request_id, "seq": seq}),
        token_ids=chunk.token_ids,
        expires_at=int(time.time()) + 3600,
        epoch=epoch,
    )


def send(
    aws: AwsClients, stack: LocalStack, job: JobMessage, *, dead_lettered: bool = False
) -> None:
    assert stack.resources is not None
    url = stack.resources.dlq_url if dead_lettered else stack.resources.queue_url
    aws.sqs.send_message(QueueUrl=url, MessageBody=job.model_dump_json())
