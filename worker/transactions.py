"""Group commit of DynamoDB writes: one TransactWriteItems for many.

A decoded job ends with one transaction (its stream's last flush and its final state,
worker/lifecycle.py). Jobs end a few at a time, and every call costs the worker's event loop
far more than the bytes it carries, so transactions written while one is in flight go out
together in the next call, up to DynamoDB's 100 actions and 4 MB. A transaction is all or
nothing: when one member's condition fails, the call names its actions, that member alone
fails (its caller then writes the ordinary way), and the others go out again.

Claims are grouped the same way (`UpdateGroups`): the jobs of one receive are claimed at once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from headrace.core.aws_calls import AwsCall
from headrace.core.errors import ConditionFailed, HeadraceError

MAX_ACTIONS = 100
# DynamoDB takes 4 MB a transaction; the request's JSON is a little bigger than what it counts.
MAX_BYTES = 3_500_000


@dataclass(eq=False)
class _Member:
    actions: list[dict[str, Any]]
    size: int
    stored: asyncio.Future[bool]


class TransactionGroups:
    def __init__(self, *, dynamodb: Any, aws: AwsCall) -> None:
        self.dynamodb = dynamodb
        self.aws = aws
        self._queue: list[_Member] = []
        self._flushing: asyncio.Task[None] | None = None

    async def write(self, actions: list[dict[str, Any]]) -> bool:
        """True once the actions are stored, all together; False if a condition of theirs
        failed (nothing of them is stored) or the call did (they may or may not be)."""
        if len(actions) > MAX_ACTIONS:
            return False
        member = _Member(
            actions, len(json.dumps(actions)), asyncio.get_running_loop().create_future()
        )
        self._queue.append(member)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await member.stored

    async def _flush(self) -> None:
        while self._queue:
            group = self._take()
            if group:
                await self._write(group)

    def _take(self) -> list[_Member]:
        group: list[_Member] = []
        actions = size = 0
        while self._queue:
            member = self._queue[0]
            if member.stored.done():  # its caller was cancelled
                self._queue.pop(0)
                continue
            if group and (
                actions + len(member.actions) > MAX_ACTIONS or size + member.size > MAX_BYTES
            ):
                break
            group.append(self._queue.pop(0))
            actions, size = actions + len(member.actions), size + member.size
        return group

    async def _write(self, group: list[_Member]) -> None:
        try:
            await self.aws(
                self.dynamodb.transact_write_items,
                TransactItems=[action for member in group for action in member.actions],
            )
        except ConditionFailed as e:
            failing = _members_of(group, e.failed) or group
            for member in failing:
                _settle(member, False)
            # The others were cancelled only with the failing ones: again, without them.
            self._queue[:0] = [m for m in group if m not in failing]
            return
        except HeadraceError:
            for member in group:
                _settle(member, False)
            return
        for member in group:
            _settle(member, True)


def _members_of(group: list[_Member], indexes: tuple[int, ...]) -> list[_Member]:
    """The members that own the actions at `indexes` of the group's transaction."""
    owners: list[_Member] = []
    start = 0
    for member in group:
        end = start + len(member.actions)
        if any(start <= i < end for i in indexes):
            owners.append(member)
        start = end
    return owners


def _settle(member: _Member, stored: bool) -> None:
    if not member.stored.done():
        member.stored.set_result(stored)


_READ_ATTEMPTS = 5


@dataclass(eq=False)
class _Update:
    update: dict[str, Any]  # UpdateItem's arguments, ReturnValues ALL_NEW
    item: asyncio.Future[dict[str, Any] | None]


class UpdateGroups:
    """Conditional updates that each want their item back (ALL_NEW), written together.

    A worker claims the jobs of one receive (up to 10) at once. An update alone goes out as
    itself; those written while one is in flight go as one transaction, then one consistent
    BatchGetItem reads their items back (a transaction returns none): two calls for many.
    A member whose condition failed gets None, as its UpdateItem alone would have.
    """

    def __init__(self, *, dynamodb: Any, aws: AwsCall) -> None:
        self.dynamodb = dynamodb
        self.aws = aws
        self._queue: list[_Update] = []
        self._flushing: asyncio.Task[None] | None = None

    async def update(self, update: dict[str, Any]) -> dict[str, Any] | None:
        """The item as the update left it; None if its condition failed."""
        member = _Update(update, asyncio.get_running_loop().create_future())
        self._queue.append(member)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await member.item

    async def _flush(self) -> None:
        while self._queue:
            group = [m for m in self._take() if not m.item.done()]  # others' callers let go
            try:
                if len(group) == 1:
                    await self._alone(group[0])
                elif group:
                    await self._together(group)
            except HeadraceError as e:
                for member in group:
                    if not member.item.done():
                        member.item.set_exception(e)

    def _take(self) -> list[_Update]:
        """The next group: one table, each item once (a transaction may not name an item
        twice: a message delivered twice is claimed twice), at most MAX_ACTIONS."""
        table = self._queue[0].update["TableName"]
        group: list[_Update] = []
        keys: set[str] = set()
        rest: list[_Update] = []
        for member in self._queue:
            key = _key_of(member.update["Key"])
            if member.update["TableName"] == table and key not in keys and len(group) < MAX_ACTIONS:
                group.append(member)
                keys.add(key)
            else:
                rest.append(member)
        self._queue = rest
        return group

    async def _alone(self, member: _Update) -> None:
        try:
            answer = await self.aws(self.dynamodb.update_item, **member.update)
        except ConditionFailed:
            _give(member, None)
            return
        _give(member, answer["Attributes"])

    async def _together(self, group: list[_Update]) -> None:
        actions = [
            {"Update": {k: v for k, v in m.update.items() if k != "ReturnValues"}} for m in group
        ]
        try:
            await self.aws(self.dynamodb.transact_write_items, TransactItems=actions)
        except ConditionFailed as e:
            failing = [group[i] for i in e.failed if i < len(group)] or group
            for member in failing:
                _give(member, None)
            # The others were cancelled only with the failing ones: again, without them.
            self._queue[:0] = [m for m in group if m not in failing]
            return
        items = await self._read(group[0].update["TableName"], [m.update["Key"] for m in group])
        for member in group:
            _give(member, items.get(_key_of(member.update["Key"])))

    async def _read(self, table: str, keys: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        pending: dict[str, Any] = {table: {"Keys": keys, "ConsistentRead": True}}
        for _ in range(_READ_ATTEMPTS):
            answer = await self.aws(self.dynamodb.batch_get_item, RequestItems=pending)
            for item in answer.get("Responses", {}).get(table, []):
                key = {name: item[name] for name in keys[0]}
                found[_key_of(key)] = item
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return found
            await asyncio.sleep(0.05)
        raise HeadraceError("could not read back the items of a transaction")


def _key_of(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def _give(member: _Update, item: dict[str, Any] | None) -> None:
    if not member.item.done():
        member.item.set_result(item)
