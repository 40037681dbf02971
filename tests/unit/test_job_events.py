"""Which changes of the jobs table make which events (headrace.api.job_events), and what their
detail holds: pure functions of the stream's records."""

from __future__ import annotations

import json
from typing import Any

from headrace.api.job_events import Change, detail_of, first_token_to_note, transition
from headrace.core.contracts import CompletionRequest, JobStatus
from headrace.core.events import MAX_DETAIL_BYTES
from headrace.core.tables import jobs as job_table
from headrace.core.tables import streams
from headrace.core.tables.jobs import JobRecord

REQUEST_ID = "7d7f5a4e-8d0e-4f1e-9d6a-3b1a2c4d5e6f"


def _job(status: JobStatus, **extra: Any) -> dict[str, Any]:
    item = job_table.put_new_job(
        "t",
        request_id=REQUEST_ID,
        owner="ab" * 32,
        model="headrace-tiny",
        request=CompletionRequest(prompt="The river", metadata={"doc": 1}),
        now=1000.0,
        ttl_seconds=60,
    )["Item"]
    item["status"] = {"S": status.value}
    item.update(extra)
    return dict(item)


def _change(
    old: dict[str, Any] | None, new: dict[str, Any] | None, sk: str = "job", name: str = "MODIFY"
) -> Change:
    keys = {"pk": {"S": f"job#{REQUEST_ID}"}, "sk": {"S": sk}}
    return Change("1", name, keys, new, old, 1001.0)


def test_a_claim_starts_and_a_final_state_ends() -> None:
    queued, running = _job(JobStatus.QUEUED), _job(JobStatus.RUNNING)
    assert transition(_change(queued, running)) == "Completion Started"
    assert transition(_change(None, running, name="INSERT")) == "Completion Started"
    for status, name in [
        (JobStatus.SUCCEEDED, "Completion Succeeded"),
        (JobStatus.FAILED, "Completion Failed"),
        (JobStatus.CANCELLED, "Completion Cancelled"),
        (JobStatus.TIMED_OUT, "Completion Timed Out"),
    ]:
        assert transition(_change(running, _job(status))) == name
    assert transition(_change(None, _job(JobStatus.FAILED), name="INSERT")) == "Completion Failed"


def test_other_changes_make_no_event() -> None:
    running = _job(JobStatus.RUNNING)
    assert transition(_change(running, running)) is None  # a heartbeat, a noted first token
    assert transition(_change(None, _job(JobStatus.QUEUED), name="INSERT")) is None
    assert transition(_change(running, _job(JobStatus.QUEUED))) is None  # handed back
    assert transition(_change(running, None, name="REMOVE")) is None
    assert transition(_change(None, running, sk="stream", name="INSERT")) is None


def test_the_event_id_is_stable_per_event_and_round() -> None:
    record = JobRecord.from_item(_job(JobStatus.SUCCEEDED, output={"S": '{"text": "x"}'}))
    first = detail_of(record, "Completion Succeeded", None)
    assert first.event_id == detail_of(record, "Completion Succeeded", 1002.0).event_id
    assert first.event_id != detail_of(record, "Completion Started", None).event_id
    retried = JobRecord.from_item(
        _job(JobStatus.SUCCEEDED, output={"S": '{"text": "x"}'}, retries={"N": "1"})
    )
    assert detail_of(retried, "Completion Succeeded", None).event_id != first.event_id
    assert first.metadata == {"doc": 1} and first.owner == "hk_" + "ab" * 32


def test_an_output_too_large_for_an_event_is_left_out_and_flagged() -> None:
    text = "x" * (MAX_DETAIL_BYTES + 1)
    output = {"S": json.dumps({"text": text, "num_completion_tokens": 3})}
    detail = detail_of(JobRecord.from_item(_job(JobStatus.SUCCEEDED, output=output)), "x", None)
    assert detail.output is None and detail.output_omitted
    small = {"S": json.dumps({"text": "fits", "num_completion_tokens": 1})}
    kept = detail_of(JobRecord.from_item(_job(JobStatus.SUCCEEDED, output=small)), "x", None)
    assert kept.output == {"text": "fits", "num_completion_tokens": 1}
    assert not kept.output_omitted and kept.num_completion_tokens == 1


def _created_head(*actions: dict[str, Any]) -> Change:
    """The INSERT a stream head's first commit makes: the item as its update expression sets it."""
    (update,) = [a["Update"] for a in actions if "Update" in a]
    values = update["ExpressionAttributeValues"]
    assignments = update["UpdateExpression"].removeprefix("SET ").split(", ")
    image = dict(update["Key"])
    for assignment in assignments:
        name, _, value = assignment.partition(" = ")
        image[name] = values[value]
    return _change(None, image, sk="stream", name="INSERT")


def test_a_head_created_at_the_first_flush_notes_the_first_token() -> None:
    commit = streams.commit_flush(
        "t", request_id=REQUEST_ID, epoch=1, from_seq=None, items=[], expires_at=9
    )
    assert first_token_to_note(_created_head({"Update": commit}))


def test_a_head_created_with_the_final_state_notes_nothing() -> None:
    # The job's final write in the same transaction carries the decoder's first-token time.
    commit = streams.commit_flush(
        "t", request_id=REQUEST_ID, epoch=1, from_seq=None, items=[], expires_at=9
    )
    created = _created_head(*streams.last_flush_actions(commit, []))
    assert not first_token_to_note(created)
    assert transition(created) is None  # and no event of its own
