"""After the run: every job as the API reports it, its stored stream, the followed streams and
the dead-letter queue, checked against README "What is guaranteed" and "Streaming over
WebSocket". Each broken guarantee is one line naming the job."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from headrace.core.tables import streams as stream_table
from infra.provision import AwsClients, ProvisionedResources
from tests.suites.chaos.followers import Followed, Frame, is_last
from tests.suites.chaos.traffic import FINAL, Submission, http_call
from tests.suites.chaos.workload import Expected

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Findings:
    submitted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # reason -> jobs
    other_final: Counter[str] = field(default_factory=Counter)
    stuck: Counter[str] = field(default_factory=Counter)  # status -> jobs
    attempts: Counter[int] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    double: list[str] = field(default_factory=list)
    stream_mismatch: list[str] = field(default_factory=list)
    follower_mismatch: list[str] = field(default_factory=list)
    greedy_checked: int = 0
    greedy_mismatch: list[str] = field(default_factory=list)
    over_max_new_tokens: list[str] = field(default_factory=list)
    follower_problems: list[str] = field(default_factory=list)
    # Events a follower got again (same seq, same content) after a worker loss: delivery is at
    # least once; clients drop seqs they have seen. Reported, not a failure.
    redelivered_events: int = 0
    redelivered_streams: int = 0
    dlq_messages: int = 0
    dlq_not_final: list[str] = field(default_factory=list)
    dlq_final: Counter[str] = field(default_factory=Counter)
    queue_left: int = 0
    last_finished_at: float = 0.0  # epoch of the last SUCCEEDED job's finished_at

    @property
    def stuck_total(self) -> int:
        return sum(self.stuck.values())

    def broken(self) -> int:
        """Jobs lost or stuck, results doubled, streams or greedy texts that disagree."""
        return (
            len(self.lost)
            + self.stuck_total
            + len(self.double)
            + len(self.stream_mismatch)
            + len(self.follower_mismatch)
            + len(self.greedy_mismatch)
            + len(self.over_max_new_tokens)
            + len(self.dlq_not_final)
        )


def fetch_views(base_url: str, api_key: str, request_ids: list[str]) -> dict[str, Any]:
    """GET /v1/llm/completions/{id} for each id: the view, or None if the API says 404."""

    def one(request_id: str) -> tuple[str, Any]:
        status, body = http_call(base_url, api_key, "GET", f"/v1/llm/completions/{request_id}")
        return request_id, (body if status == 200 else None)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, request_ids))


def stored_events(aws: AwsClients, table: str, request_id: str) -> list[Frame]:
    query: dict[str, Any] = stream_table.query_chunks(table, request_id)
    events: list[Frame] = []
    while True:
        answer = aws.dynamodb.query(**query)
        events += [json.loads(item["event"]["S"]) for item in answer["Items"]]
        if "LastEvaluatedKey" not in answer:
            return events
        query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def fetch_stored_events(
    aws: AwsClients, table: str, request_ids: list[str]
) -> dict[str, list[Frame]]:
    """Each job's stored stream events, eight jobs' queries at a time."""

    def one(request_id: str) -> list[Frame]:
        return stored_events(aws, table, request_id)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(request_ids, pool.map(one, request_ids), strict=True))


def _text(events: list[Frame]) -> str:
    return "".join((e.get("output") or {}).get("text", "") for e in events)


def _first_difference(a: str, b: str) -> str:
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return f"{len(a)} vs {len(b)} chars, first difference at {at}"


def check_stored_stream(view: dict[str, Any], events: list[Frame], found: Findings) -> None:
    rid = view["request_id"]
    seqs = [int(e["seq"]) for e in events]
    lasts = [e for e in events if is_last(e)]
    if len(lasts) > 1:
        found.double.append(f"{rid}: {len(lasts)} final events stored (seqs {seqs[-len(lasts) :]})")
    if seqs != list(range(len(seqs))):
        found.stream_mismatch.append(f"{rid}: stored seqs not 0..n-1: {_seq_summary(seqs)}")
    if lasts and not is_last(events[-1]):
        found.stream_mismatch.append(f"{rid}: events stored after the final one")
    if view["status"] != "SUCCEEDED":
        if lasts and (lasts[-1].get("output") or {}).get("finished"):
            found.stream_mismatch.append(f"{rid}: stream finished but the job is {view['status']}")
        return
    output = view["output"] or {}
    if not lasts:
        found.stream_mismatch.append(f"{rid}: SUCCEEDED but no final event stored")
        return
    if _text(events) != output.get("text"):
        detail = _first_difference(_text(events), str(output.get("text")))
        found.stream_mismatch.append(f"{rid}: stored deltas != stored text ({detail})")
    final = lasts[0].get("output") or {}
    if final.get("num_completion_tokens") != output.get("num_completion_tokens"):
        found.stream_mismatch.append(
            f"{rid}: final event says {final.get('num_completion_tokens')} tokens,"
            f" the result {output.get('num_completion_tokens')}"
        )


def check_followed(followed: Followed, view: dict[str, Any], found: Findings) -> None:
    rid = followed.request_id
    by_seq: dict[int, list[str]] = {}
    for frame in followed.frames:
        by_seq.setdefault(int(frame["seq"]), []).append(json.dumps(frame, sort_keys=True))
    for seq, copies in sorted(by_seq.items()):
        if len(set(copies)) > 1:
            found.follower_mismatch.append(f"{rid}: seq {seq} delivered with different content")
    again = len(followed.frames) - len(by_seq)
    if again:
        found.redelivered_events += again
        found.redelivered_streams += 1
    delivered_lasts = [f for f in followed.frames if is_last(f)]
    final_seqs = sorted({int(f["seq"]) for f in delivered_lasts})
    if len(final_seqs) > 1:
        found.double.append(f"{rid}: final events delivered at seqs {final_seqs}")
    found.follower_problems += [f"{rid} ({followed.door}): {p}" for p in followed.problems]
    if view["status"] not in FINAL:
        return
    if not delivered_lasts:
        found.follower_mismatch.append(f"{rid}: follower never got the final event")
        return
    unique = [json.loads(by_seq[s][0]) for s in sorted(by_seq)]
    seqs = sorted(by_seq)
    if seqs != list(range(len(seqs))):
        found.follower_mismatch.append(f"{rid}: delivered seqs not 0..n-1: {_seq_summary(seqs)}")
    if view["status"] == "SUCCEEDED" and _text(unique) != (view["output"] or {}).get("text"):
        detail = _first_difference(_text(unique), str((view["output"] or {}).get("text")))
        found.follower_mismatch.append(f"{rid}: delivered deltas != stored text ({detail})")


def _seq_summary(seqs: list[int]) -> str:
    return str(seqs) if len(seqs) <= 12 else f"{seqs[:6]} ... {seqs[-6:]} ({len(seqs)} events)"


def failure_reason(view: dict[str, Any]) -> str:
    error = view.get("error") or {}
    message = _UUID.sub("<id>", str(error.get("message", "no error recorded")))
    return f"{error.get('type', '?')}: {message[:100]}"


def check_job(
    submission: Submission,
    view: dict[str, Any],
    expected: dict[tuple[str, int], Expected],
    found: Findings,
) -> None:
    rid, spec, status = view["request_id"], submission.spec, view["status"]
    found.attempts[int(view.get("attempts", 0))] += 1
    if status not in FINAL:
        found.stuck[status] += 1
        return
    if status == "FAILED":
        found.failed[failure_reason(view)] += 1
        return
    if status != "SUCCEEDED":
        found.other_final[status] += 1
        return
    found.succeeded += 1
    output = view["output"] or {}
    finished = dt.datetime.fromisoformat(view["finished_at"]).timestamp()
    found.last_finished_at = max(found.last_finished_at, finished)
    tokens = int(output.get("num_completion_tokens", 0))
    if tokens > int(spec.body["max_new_tokens"]):
        found.over_max_new_tokens.append(
            f"{rid}: {tokens} tokens for max_new_tokens {spec.body['max_new_tokens']}"
            f" (attempts {view.get('attempts')})"
        )
    if spec.greedy:
        found.greedy_checked += 1
        want = expected[spec.greedy_key]
        got = (output.get("text"), output.get("num_prompt_tokens"), tokens)
        if got != (want.text, want.num_prompt_tokens, want.num_completion_tokens):
            found.greedy_mismatch.append(
                f"{rid}: {spec.greedy_key} attempts {view.get('attempts')}:"
                f" {_first_difference(str(got[0]), want.text)}, tokens {got[1]}+{got[2]}"
                f" vs {want.num_prompt_tokens}+{want.num_completion_tokens}"
            )


def drain_dlq(aws: AwsClients, resources: ProvisionedResources) -> list[str]:
    """Bodies of every message in the dead-letter queue (received, then deleted)."""
    bodies: list[str] = []
    empty_receives = 0
    while empty_receives < 2:
        messages = aws.sqs.receive_message(
            QueueUrl=resources.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        empty_receives = 0 if messages else empty_receives + 1
        for message in messages:
            bodies.append(message["Body"])
            aws.sqs.delete_message(
                QueueUrl=resources.dlq_url, ReceiptHandle=message["ReceiptHandle"]
            )
    return bodies


def messages_in(aws: AwsClients, queue_url: str) -> int:
    attributes = aws.sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def dlq_request_id(body: str) -> str | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if isinstance(message, dict) and isinstance(message.get("detail"), dict):
        message = message["detail"]  # an EventBridge envelope
    request_id = message.get("request_id") if isinstance(message, dict) else None
    return str(request_id) if request_id else None
