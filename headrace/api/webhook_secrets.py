"""Each API key's webhook signing secret: made on first use, read and rotated by its owner.

During a rotation window both the new secret and the one it replaced sign every delivery
(`webhook-signature` carries one `v1,` signature per secret), so a receiver can switch over
whenever it likes within the window.
"""

from __future__ import annotations

import datetime as dt

from standardwebhooks import Webhook

from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.errors import ConditionFailed, Unauthorized
from headrace.core.events import iso
from headrace.core.tables import deliveries as table
from headrace.core.tables.deliveries import SigningSecrets
from headrace.core.webhook_contracts import WebhookSecret

_ROTATION_TRIES = 5


def secrets_of(services: ApiServices, key_hash: str) -> SigningSecrets:
    """The key's secrets, its first one made now if it has none. Unauthorized: the key is gone."""
    name = services.settings.table_name
    found = call_aws(services.dynamodb.get_item, **table.get_key_item(name, key_hash)).get("Item")
    if found is None:
        raise Unauthorized("unknown API key")
    current = SigningSecrets.from_item(found)
    if current.current is not None:
        return current
    try:
        made = call_aws(
            services.dynamodb.update_item,
            **table.ensure_secret(name, key_hash, table.new_secret()),
        )
    except ConditionFailed:
        raise Unauthorized("unknown API key") from None
    return SigningSecrets.from_item(made["Attributes"])


def view(secrets: SigningSecrets, now: float) -> WebhookSecret:
    assert secrets.current is not None
    live_previous = secrets.previous_until is not None and now < secrets.previous_until
    return WebhookSecret(
        secret=secrets.current,
        previous_secret=secrets.previous if live_previous else None,
        previous_expires_at=iso(secrets.previous_until) if live_previous else None,
    )


def read(services: ApiServices, key_hash: str) -> WebhookSecret:
    return view(secrets_of(services, key_hash), services.clock())


def rotate(services: ApiServices, key_hash: str) -> WebhookSecret:
    """A new secret; the one it replaces signs beside it for webhook_secret_rotation_seconds."""
    name = services.settings.table_name
    for _ in range(_ROTATION_TRIES):
        current = secrets_of(services, key_hash)
        now = services.clock()
        try:
            done = call_aws(
                services.dynamodb.update_item,
                **table.rotate_secret(
                    name,
                    key_hash,
                    current=current.current,
                    new=table.new_secret(),
                    previous_until=now + services.settings.webhook_secret_rotation_seconds,
                ),
            )
        except ConditionFailed:
            continue  # rotated at the same moment by another request: rotate that one
        return view(SigningSecrets.from_item(done["Attributes"]), now)
    raise ConditionFailed("the secret is being rotated by other requests; retry")


def signature(secrets: list[str], msg_id: str, timestamp: float, payload: str) -> str:
    """`webhook-signature`: one `v1,<base64>` per secret, space-separated."""
    moment = dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)
    return " ".join(Webhook(secret).sign(msg_id, moment, payload) for secret in secrets)
