"""The OpenAI Batch API's resources in template.yaml: its functions' least privilege, and a
private, encrypted bucket whose objects expire."""

from __future__ import annotations

from typing import Any

import pytest

from infra.template import load_template
from tests.unit.test_template import _policy_actions


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_batch_functions_get_least_privilege(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    chat_template = {"s3:GetObject", "s3:ListBucket"}  # a chat line's template, from the model
    assert _policy_actions(resources["CreateFileFunction"]) == {
        "dynamodb:PutItem",
        "s3:PutObject",
        *chat_template,
    }
    for name in ("GetFileFunction", "GetBatchFunction"):
        assert _policy_actions(resources[name]) == {"dynamodb:GetItem"}
    assert _policy_actions(resources["FileContentFunction"]) == {"dynamodb:GetItem", "s3:GetObject"}
    assert _policy_actions(resources["ListBatchesFunction"]) == {"dynamodb:Query"}
    assert _policy_actions(resources["CancelBatchFunction"]) == {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
    }
    progress = _policy_actions(resources["BatchProgressFunction"])
    assert not {"sqs:SendMessage", "dynamodb:DeleteItem", "dynamodb:Scan"} & progress
    bucket = resources["BatchFilesBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 30
