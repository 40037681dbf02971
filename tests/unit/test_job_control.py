"""The pure pieces of job control: final and halted states, a halted job's last stream event,
when a job is due to stop, and the request's timeout. (Over the wire:
tests/e2e/control/test_cancel_e2e.py and control/test_deadlines_e2e.py; in the engine:
tests/unit/test_halts.py.)"""

from __future__ import annotations

import pytest

from headrace.api.completions import check_limits, timeout_of
from headrace.core.contracts import CompletionRequest, JobStatus, StreamEvent, StreamOutput
from headrace.core.control import HALT_STATUS_CODES, halted_event, halted_status
from headrace.core.errors import InvalidRequest
from headrace.core.settings import Settings
from headrace.core.tables.jobs import JobRecord
from worker.halts import Halt


def record(status: JobStatus, **fields: object) -> JobRecord:
    defaults: dict[str, object] = {
        "request_id": "r",
        "owner": "o",
        "model": "m",
        "status": status,
        "attempts": 1,
        "request": CompletionRequest(prompt="x", timeout_seconds=10),
        "created_at": 1000.0,
        "updated_at": 1000.0,
    }
    return JobRecord(**{**defaults, **fields})  # type: ignore[arg-type]


def test_cancelled_and_timed_out_are_final_and_halted() -> None:
    assert {s for s in JobStatus if s.is_final} == {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
    }
    assert {s for s in JobStatus if s.is_halted} == {JobStatus.CANCELLED, JobStatus.TIMED_OUT}


@pytest.mark.parametrize("status", [JobStatus.CANCELLED, JobStatus.TIMED_OUT])
def test_a_halted_jobs_last_event_is_finished_and_says_why(status: JobStatus) -> None:
    event = halted_event("r", status, text="tail", num_prompt_tokens=3, num_completion_tokens=7)
    wire = StreamEvent.model_validate_json(event.model_dump_json())
    assert wire.is_last and halted_status(wire) is status
    assert wire.output == StreamOutput(
        text="tail", finished=True, num_prompt_tokens=3, num_completion_tokens=7
    )
    assert wire.error is not None and wire.error.status_code == HALT_STATUS_CODES[status]


def test_other_last_events_are_not_halts() -> None:
    finished = StreamEvent(
        request_id="r", output=StreamOutput(text="", finished=True, num_completion_tokens=1)
    )
    assert halted_status(finished) is None
    assert halted_status(StreamEvent.failure("r", 504, "stream timed out")) is None
    assert halted_status(StreamEvent.failure("r", 500, "engine error")) is None


def test_a_cancel_comes_before_the_deadline_and_neither_before_its_time() -> None:
    assert record(JobStatus.RUNNING).deadline == 1010.0
    assert record(JobStatus.RUNNING).halt_due(1009.9) is None
    assert record(JobStatus.RUNNING).halt_due(1010.0) is JobStatus.TIMED_OUT
    cancelled = record(JobStatus.RUNNING, cancel_requested_at=1001.0)
    assert cancelled.halt_due(1001.0) is JobStatus.CANCELLED
    assert cancelled.halt_due(5000.0) is JobStatus.CANCELLED
    no_deadline = record(JobStatus.QUEUED, request=CompletionRequest(prompt="x"))
    assert no_deadline.deadline is None and no_deadline.halt_due(1e12) is None


def test_the_view_shows_a_halted_jobs_partial_output_and_its_times() -> None:
    output = {"text": "par", "num_completion_tokens": 2}
    halted = record(JobStatus.CANCELLED, output=output, cancel_requested_at=1002.5).view()
    assert halted.output == output
    assert halted.deadline == "1970-01-01T00:16:50.000+00:00"
    assert halted.cancel_requested_at == "1970-01-01T00:16:42.500+00:00"
    assert record(JobStatus.TIMED_OUT, output=output).view().output == output
    assert record(JobStatus.RUNNING, output=output).view().output is None


def test_the_timeout_is_the_requests_else_the_default_within_the_maximum() -> None:
    settings = Settings(default_timeout_seconds=60, max_timeout_seconds=600)
    assert timeout_of(settings, CompletionRequest(prompt="x")) == 60
    assert timeout_of(settings, CompletionRequest(prompt="x", timeout_seconds=0.5)) == 0.5
    check_limits(settings, CompletionRequest(prompt="x", timeout_seconds=600))
    with pytest.raises(InvalidRequest, match=r"^timeout_seconds: 600\.5 exceeds the limit of 600$"):
        check_limits(settings, CompletionRequest(prompt="x", timeout_seconds=600.5))
    capped = Settings(default_timeout_seconds=3600, max_timeout_seconds=30)
    assert timeout_of(capped, CompletionRequest(prompt="x")) == 30


def test_a_halt_is_due_at_a_cancel_or_past_its_deadline_and_the_first_reason_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("worker.halts.time.time", lambda: now[0])
    halt = Halt(deadline=101.0)
    assert halt.due() is None
    now[0] = 101.0
    assert halt.due() is JobStatus.TIMED_OUT
    halt.request(JobStatus.CANCELLED)  # too late: it is timed out
    assert halt.due() is JobStatus.TIMED_OUT
    cancelled = Halt(deadline=None)
    cancelled.request(JobStatus.CANCELLED)
    assert cancelled.due() is JobStatus.CANCELLED
