"""Deterministic, torch-free builders for small CTranslate2 models used in dev and tests."""

from headrace.dev.model.build import (
    DEV_MODEL_NAME,
    artifact_digest,
    build_dev_model,
    build_random_model,
)
from headrace.dev.model.tokenizer import EOS_ID, EOS_TOKEN

__all__ = [
    "DEV_MODEL_NAME",
    "EOS_ID",
    "EOS_TOKEN",
    "artifact_digest",
    "build_dev_model",
    "build_random_model",
]
