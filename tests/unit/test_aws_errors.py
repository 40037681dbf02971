"""AWS error codes as the domain errors the callers tell apart (headrace.core.aws)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from headrace.core.aws import translate_client_error
from headrace.core.errors import ConditionFailed, HeadraceError, TransientError


def cancelled(*reasons: str) -> ClientError:
    # The parsed response as botocore gives it (its stubs' TypedDict wants every metadata key).
    response: Any = {
        "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
        "CancellationReasons": [{"Code": r} for r in reasons],
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, "TransactWriteItems")


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        # A condition of ours failed: the caller decides (lost lease, someone subscribed).
        (("None", "ConditionalCheckFailed"), ConditionFailed),
        # Another write to one of the items raced it: worth another try, as AWS advises.
        (("TransactionConflict", "None"), TransientError),
        (("ValidationError",), HeadraceError),
    ],
)
def test_a_cancelled_transaction_says_why(
    reasons: tuple[str, ...], expected: type[HeadraceError]
) -> None:
    assert type(translate_client_error(cancelled(*reasons))) is expected
