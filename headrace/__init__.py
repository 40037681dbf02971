"""Headrace: queue-driven LLM completions (API Gateway, Lambda, SQS, DynamoDB, CTranslate2)."""

__version__ = "0.1.0"
