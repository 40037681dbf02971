"""The SQS side of the worker's jobs: receive messages, delete them, say when they show again.

What the worker cannot do about a failed delete or visibility change is logged, not raised:
the message shows again later, and a duplicate of a job already final is deleted then.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from headrace.core.aws_calls import AwsCall, call_aws_async
from headrace.core.errors import HeadraceError

logger = logging.getLogger("headrace.worker")

RECEIVE_LIMIT = 10  # messages a ReceiveMessage may return
VISIBILITY_BATCH_LIMIT = 10  # entries a ChangeMessageVisibilityBatch may carry
DELETE_BATCH_LIMIT = 10  # entries a DeleteMessageBatch may carry
MAX_VISIBILITY_S = 43_200  # the longest SQS keeps a message out of sight (12 hours)
MAX_DELAY_S = 900  # the longest SQS delays a message sent (15 minutes)


class MessageQueue(Protocol):
    """What the worker does with the messages it holds: one queue (JobQueue) or both lanes
    (worker.lanes.LaneQueues)."""

    async def receive(
        self, *, max_messages: int, wait_seconds: int, hide_seconds: int | None = None
    ) -> list[dict[str, Any]]: ...

    async def delete(self, receipt: str) -> None: ...

    async def set_visibility(self, receipt: str, seconds: int) -> None: ...

    async def extend_visibility(self, receipts: list[str], seconds: int) -> dict[str, str]: ...


class JobQueue:
    def __init__(self, *, sqs: Any, queue_url: str, aws: AwsCall = call_aws_async) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.aws = aws
        # Deletes asked for while one is in flight go out together in the next batch call: a
        # call costs the worker's event loop far more than an entry does.
        self._deletes: list[tuple[str, asyncio.Future[None]]] = []
        self._deleting: asyncio.Task[None] | None = None

    async def receive(
        self, *, max_messages: int, wait_seconds: int, hide_seconds: int | None = None
    ) -> list[dict[str, Any]]:
        """Long-poll for up to `max_messages` (out of sight for `hide_seconds`; None: the
        queue's visibility timeout); raises HeadraceError if the poll fails."""
        hidden = {} if hide_seconds is None else {"VisibilityTimeout": hide_seconds}
        response = await self.aws(
            self.sqs.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(RECEIVE_LIMIT, max_messages),
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
            **hidden,
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    async def visible(self) -> int:
        """SQS's approximate count of the messages waiting to be received."""
        found = await self.aws(
            self.sqs.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages"],
        )
        return int(found.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    async def send(self, body: str, *, delay_seconds: int = 0) -> None:
        """Enqueue a message; raises HeadraceError if it could not be sent."""
        await self.aws(
            self.sqs.send_message,
            QueueUrl=self.queue_url,
            MessageBody=body,
            DelaySeconds=max(0, min(delay_seconds, MAX_DELAY_S)),
        )

    async def delete(self, receipt: str) -> None:
        """Delete the message (with others being deleted meanwhile); never raises: a message
        not deleted comes back later and is deleted then, as a duplicate of a final job."""
        future = asyncio.get_running_loop().create_future()
        self._deletes.append((receipt, future))
        if self._deleting is None or self._deleting.done():
            self._deleting = asyncio.create_task(self._delete_queued())
        await future

    async def _delete_queued(self) -> None:
        while self._deletes:
            taken = self._deletes[:DELETE_BATCH_LIMIT]
            self._deletes = self._deletes[DELETE_BATCH_LIMIT:]
            entries = [{"Id": str(i), "ReceiptHandle": r} for i, (r, _) in enumerate(taken)]
            try:
                answer = await self.aws(
                    self.sqs.delete_message_batch, QueueUrl=self.queue_url, Entries=entries
                )
                for failure in answer.get("Failed", []):
                    reason = failure.get("Message") or failure.get("Code")
                    logger.warning("could not delete the message: %s", reason)
            except HeadraceError as e:
                logger.warning("could not delete %d messages: %s", len(taken), e.detail)
            finally:  # whatever happened, its callers go on: a message not deleted comes back
                for _, future in taken:
                    if not future.done():  # its caller may have been cancelled
                        future.set_result(None)

    async def set_visibility(self, receipt: str, seconds: int) -> None:
        """Show the message again in `seconds` (0: at once)."""
        try:
            await self.aws(
                self.sqs.change_message_visibility,
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=min(seconds, MAX_VISIBILITY_S),
            )
        except HeadraceError as e:
            logger.warning("could not change message visibility: %s", e.detail)

    async def extend_visibility(self, receipts: list[str], seconds: int) -> dict[str, str]:
        """Keep the messages out of sight `seconds` from now, ten a call, the calls at once;
        the receipts that could not be extended, with the reason SQS gave."""
        batches = [
            receipts[start : start + VISIBILITY_BATCH_LIMIT]
            for start in range(0, len(receipts), VISIBILITY_BATCH_LIMIT)
        ]
        failed: dict[str, str] = {}
        for answer in await asyncio.gather(*(self._extend(b, seconds) for b in batches)):
            failed.update(answer)
        return failed

    async def _extend(self, batch: list[str], seconds: int) -> dict[str, str]:
        entries = [
            {"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": seconds}
            for i, receipt in enumerate(batch)
        ]
        try:
            answer = await self.aws(
                self.sqs.change_message_visibility_batch, QueueUrl=self.queue_url, Entries=entries
            )
        except HeadraceError as e:
            return dict.fromkeys(batch, e.detail)
        return {
            batch[int(failure["Id"])]: str(failure.get("Message") or failure.get("Code"))
            for failure in answer.get("Failed", [])
        }
