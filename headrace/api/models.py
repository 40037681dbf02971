"""Which models this deployment serves, and whether a worker is serving each right now."""

from __future__ import annotations

from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import ModelEndpoint
from headrace.core.tables import jobs as job_table


def model_endpoints(services: ApiServices) -> list[ModelEndpoint]:
    zoo = services.settings.model_zoo
    names = sorted(zoo)
    served: dict[str, float] = {}
    if names:
        table = services.settings.table_name
        found = call_aws(services.dynamodb.batch_get_item, **job_table.get_presences(table, names))
        served = dict(job_table.served_until(item) for item in found["Responses"].get(table, []))
    now = services.clock()
    return [
        ModelEndpoint(
            name=name,
            status="READY" if served.get(name, 0.0) > now else "NO_WORKER",
            served=served.get(name, 0.0) > now,
            artifact=zoo[name],
        )
        for name in names
    ]
