"""The one settings object. Built once (cold start, worker start, CLI) and passed down."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEADRACE_", extra="ignore")

    # --- AWS resources (names come from template.yaml outputs on AWS, from the dev stack locally)
    region: str = "us-east-1"
    # Unset on AWS; the local AWS endpoint (moto server) in dev and tests.
    aws_endpoint_url: str | None = None
    # Connections each AWS client keeps open (botocore's default is 10): as many as calls run
    # at once on one client, 64 in the local gateway (bench/pool_size.py). Opened only as needed.
    aws_max_pool_connections: int = Field(default=64, ge=1)
    table_name: str = "headrace-jobs"
    # The interactive lane's queue and the batch lane's (requests with priority "batch"), each
    # with its dead-letter queue. Workers take interactive work first (worker/lanes.py).
    queue_name: str = "headrace-jobs"
    dlq_name: str = "headrace-jobs-dlq"
    batch_queue_name: str = "headrace-jobs-batch"
    batch_dlq_name: str = "headrace-jobs-batch-dlq"
    # While both lanes have work, at least this share of the jobs a worker takes are batch jobs,
    # so a steady interactive load never starves the batch lane.
    batch_lane_share: float = Field(default=0.1, ge=0.0, lt=1.0)
    models_bucket: str = "headrace-models"

    # --- Model zoo: model name -> artifact location (s3://bucket/prefix or a local directory)
    # holding a CTranslate2 model directory and its tokenizer.json. JSON in the environment.
    model_zoo: dict[str, str] = Field(default_factory=dict)
    default_model: str = "headrace-tiny"

    # --- API keys
    # How long a process trusts a key it found in the table: a revoked key is refused by a warm
    # Lambda container (or the local gateway) within this, by a new one at once.
    api_key_cache_seconds: float = Field(default=60.0, ge=0)

    # --- Request limits
    max_prompt_bytes: int = 64 * 1024
    max_new_tokens_limit: int = 2048
    max_stop_sequences: int = 4
    sync_wait_seconds: float = 25.0
    sync_poll_interval_seconds: float = 0.05
    # A request's timeout_seconds when it sets none, and the most it may set: a job not final
    # this long after its submit ends TIMED_OUT (never decoded if it had not started).
    default_timeout_seconds: float = Field(default=3600.0, gt=0)
    max_timeout_seconds: float = Field(default=86400.0, gt=0)

    # --- Job lifecycle
    visibility_timeout_seconds: int = 60
    # SQS's receives of a message before it goes to the dead-letter queue: only a backstop.
    max_receive_count: int = 5
    # Claims of a job (its `attempts`, counted in its record) before a worker gives up and marks
    # it FAILED. A receive that finds the job leased to a live worker does not count; keep it
    # below max_receive_count so the worker, not the redrive, sees the job's last message.
    max_attempts: int = 3
    # How often a worker looks for job messages in the dead-letter queue (each one's job is
    # made final, or its message goes back to the queue while the job still has attempts).
    dead_letter_check_seconds: float = 30.0
    job_ttl_seconds: int = 7 * 24 * 3600
    # Idempotency-Key: how long a key answers with the job of its first request (a DynamoDB TTL
    # on the key's record; never longer than the job's own TTL).
    idempotency_retention_seconds: int = Field(default=24 * 3600, ge=1)
    # How long a key's first request may take to record and enqueue its job before another
    # request with the key may take it over (the first died in between): the functions' timeout.
    idempotency_in_progress_seconds: float = Field(default=30.0, gt=0)
    # A worker that has not refreshed its presence within this many seconds is not serving.
    presence_ttl_seconds: int = 30

    # --- Worker
    worker_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    model_cache_dir: str = ".headrace/model-cache"
    device: str = "auto"
    compute_type: str = "default"
    max_batch_size: int = 0  # 0: timed at warm-up on the model and device (worker/tuning.py)
    max_batch_wait_ms: int = -1  # -1: chosen for the device (25 on CPU, 10 on CUDA)
    # A busy worker's free replica waits this long at most for a fuller batch while jobs keep
    # arriving. -1: chosen for the device (4000 on CPU, 200 on CUDA).
    max_batch_hold_ms: int = -1
    # Jobs a worker takes from the queue per engine replica (decoding or waiting for a batch),
    # and no more, so that other workers get their share. 0: chosen for the device (32 on CPU,
    # 64 on CUDA).
    prefetch_per_replica: int = 0
    inter_threads: int = 0  # 0: chosen for the device
    intra_threads: int = 0  # 0: chosen for the device
    receive_wait_seconds: int = 20
    shutdown_grace_seconds: float = 30.0
    # ECS task scale-in protection (worker/task_protection.py): the container agent's endpoint,
    # which ECS sets in every container as ECS_AGENT_URI, read first (the dev stack serves one
    # of its own); unset, the worker asks for no protection. While busy, protection is asked for
    # this many minutes and renewed at half of it; it is cleared once idle this long.
    ecs_agent_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ecs_agent_uri", "headrace_ecs_agent_uri"),
    )
    task_protection_minutes: int = Field(default=10, ge=1, le=2880)
    task_protection_idle_seconds: float = Field(default=30.0, ge=0)
    # Streaming: tokens are coalesced into one event per this interval (the first goes at once).
    stream_flush_ms: int = 50
    # While no connection follows a job its events are stored less often (still resumable):
    # locally every store is CPU the decoder loses (2 s against 500 ms about halved the local
    # AWS endpoint's share of the cores when it was set; its commit has the figures).
    stream_unfollowed_flush_ms: int = 2000
    # A worker posts stream events to all the followers of its streams together at most about
    # this often (each flush posts to every follower of its stream): under load the interval
    # grows past stream_flush_ms instead of the CPU the posts take from the decoder.
    stream_posts_per_second: float = Field(default=100.0, gt=0)
    # While a connection follows a job, an event carries at least this many new tokens (the
    # first and the last go at once; none waits more than a second): a flush is a post per
    # follower and a stored chunk, which on a CPU worker cost the decoder more than a token.
    stream_interval_tokens: int = Field(default=4, ge=1)
    # How often a worker checks (one BatchGetItem for all its running jobs) whether someone
    # subscribed to one of them: a new subscriber to a running job is attached within this.
    subscriber_check_ms: int = 2000
    # How often a worker checks (the same BatchGetItem: the check runs at the shorter of the
    # two intervals) whether a cancel was asked for one of its running jobs: a running job
    # stops within this plus one decode step of the cancel request.
    cancel_check_ms: int = Field(default=500, ge=1)
    # Where handlers reach the WebSocket management API; unset on AWS (https://domain/stage).
    websocket_management_url: str | None = None

    # --- Events and webhooks (README "Event-driven use")
    # The EventBridge bus jobs' events go to, and Completion Requested events come from.
    event_bus_name: str = "headrace-events"
    # The webhook deliveries, one message per attempt.
    webhook_queue_name: str = "headrace-webhooks"
    # Waits before each retry of a webhook that timed out, could not connect or answered 5xx or
    # 429; after the last, the delivery is given up. JSON in the environment.
    webhook_retry_delays_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0]
    )
    webhook_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    webhook_read_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long a rotated-out signing secret still signs (beside the new one).
    webhook_secret_rotation_seconds: float = Field(default=24 * 3600.0, ge=0)
    # Development only: callback URLs may be plain http to a loopback address (a receiver on
    # this machine). Off on AWS; `headrace dev` and the tests turn it on.
    webhook_allow_loopback: bool = False

    # --- Batch files (OpenAI's Batch API, README "OpenAI Batch API")
    # The bucket of input, output and error files, and the queue of batches to fan out (or to
    # cancel) behind the API.
    batch_files_bucket: str = "headrace-batch-files"
    batch_fanout_queue_name: str = "headrace-batch-fanout"
    # An upload reaches its function base64-encoded in one event, under Lambda's 6 MB request
    # payload: 4 MiB of JSONL is the most that fits.
    batch_file_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    batch_max_lines: int = Field(default=50_000, ge=1)
    # A file's content is answered in the response up to this size (JSON-escaped, it must stay
    # under Lambda's 6 MB response payload); above it, a redirect to a presigned S3 URL.
    batch_content_inline_bytes: int = Field(default=2 * 1024 * 1024, ge=0)
    # Lines recorded and enqueued per step of a fan-out (and per cursor advance).
    batch_fanout_chunk_lines: int = Field(default=100, ge=1, le=1000)
    # How long one fan-out holds its batch (the fan-out function's timeout): a delivery of the
    # batch's message while another works on it is dropped, one after it lapses takes over.
    batch_fanout_lease_seconds: float = Field(default=900.0, gt=0)
    # How long files and batches are kept (a DynamoDB TTL; the bucket's lifecycle rule matches).
    batch_retention_seconds: int = Field(default=30 * 24 * 3600, ge=1)

    # --- Logging
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _split_worker_models(cls, data: object) -> object:
        if isinstance(data, dict):
            raw = data.get("worker_models")
            if isinstance(raw, str):
                data = {**data, "worker_models": [m for m in raw.split(",") if m.strip()]}
        return data

    def served_models(self) -> list[str]:
        """Models this worker loads: the ones named, or every model of the zoo."""
        return self.worker_models or sorted(self.model_zoo)
