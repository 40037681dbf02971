"""The public id of an API key (`hk_…`): what jobs, events, deliveries and intake messages name.

A key is stored as its SHA-256 (`apikey#<hash>`), and every job records that hash as its owner.
The public id is the hash with a prefix, so it maps to the stored owner and back without a
lookup and without rewriting a single stored job or key. Publishing the hash gives nothing
away: keys are 32 random bytes, and the hash was already the key id `headrace keys` printed.
"""

from __future__ import annotations

import re

from headrace.core.errors import InvalidRequest

PUBLIC_PREFIX = "hk_"
_HASH = re.compile(r"^[0-9a-f]{64}$")


def public_key_id(key_hash: str) -> str:
    """`hk_<sha256 hex>` for the hash a job's `owner` holds."""
    return PUBLIC_PREFIX + key_hash


def key_hash_of(public_id: str, *, field: str = "owner") -> str:
    """The stored hash behind a public id; InvalidRequest naming `field` if it is not one."""
    key_hash = public_id.removeprefix(PUBLIC_PREFIX)
    if not public_id.startswith(PUBLIC_PREFIX) or not _HASH.match(key_hash):
        raise InvalidRequest(f"{field}: not an API key id (hk_ and 64 hex digits)")
    return key_hash
