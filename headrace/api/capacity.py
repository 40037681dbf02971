"""A queued job's view says whether anything serves its model: a cold start and a queue look
alike as a bare QUEUED.

One Query of the model's partition (headrace.core.tables.workers) while the job is QUEUED;
nothing more for any other status.
"""

from __future__ import annotations

from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import JobStatus, JobView
from headrace.core.job_capacity import CapacityView
from headrace.core.tables import workers as worker_table
from headrace.core.tables.jobs import JobRecord, iso


def job_view(services: ApiServices, record: JobRecord) -> JobView:
    """The job's view, with its capacity while it is QUEUED."""
    view = record.view()
    if record.status is not JobStatus.QUEUED:
        return view
    return view.model_copy(update={"capacity": capacity_of(services, record)})


def capacity_of(services: ApiServices, record: JobRecord) -> CapacityView:
    found = call_aws(
        services.dynamodb.query,
        **worker_table.query_model(services.settings.table_name, record.model),
    )
    capacity = worker_table.ModelCapacity.from_items(found.get("Items", []))
    now = services.clock()
    workers = capacity.serving(now)
    if workers == 0:
        waiting_since = record.requeued_at or record.created_at
        stopped = capacity.last_served_until
        if stopped is not None and waiting_since < stopped <= now:
            waiting_since = stopped  # a worker served the model after the job was queued
        return CapacityView(state="scaling_from_zero", since=iso(waiting_since), workers=0)
    lane = record.request.priority
    counted = capacity.counted_at
    return CapacityView(
        state="serving",
        workers=workers,
        backlog_ahead=capacity.waiting.get(lane) if counted is not None else None,
        backlog_counted_at=iso(counted) if counted is not None else None,
    )
