"""Which models this deployment serves, and whether a worker is serving each right now."""

from __future__ import annotations

from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.contracts import ModelEndpoint
from headrace.core.errors import NotFound
from headrace.core.tables import jobs as job_table


def model_endpoints(services: ApiServices) -> list[ModelEndpoint]:
    """Every model of the zoo, by name."""
    return _endpoints(services, sorted(services.settings.model_zoo))


def model_endpoint(services: ApiServices, name: str) -> ModelEndpoint:
    """One model of the zoo; NotFound for any other name."""
    if name not in services.settings.model_zoo:
        raise NotFound(f"model {name!r} not found; GET /v1/llm/model-endpoints lists the models")
    [endpoint] = _endpoints(services, [name])
    return endpoint


def _endpoints(services: ApiServices, names: list[str]) -> list[ModelEndpoint]:
    presences: dict[str, job_table.ModelPresence] = {}
    if names:
        table = services.settings.table_name
        found = call_aws(services.dynamodb.batch_get_item, **job_table.get_presences(table, names))
        for item in found["Responses"].get(table, []):
            presence = job_table.model_presence(item)
            presences[presence.model] = presence
    now = services.clock()
    return [_endpoint(services, name, presences.get(name), now) for name in names]


def _endpoint(
    services: ApiServices, name: str, presence: job_table.ModelPresence | None, now: float
) -> ModelEndpoint:
    served = presence is not None and presence.served_until > now
    return ModelEndpoint(
        name=name,
        model_name=name,
        status="READY" if served else "NO_WORKER",
        served=served,
        artifact=services.settings.model_zoo[name],
        context_length=presence.context_length if presence else None,
    )
