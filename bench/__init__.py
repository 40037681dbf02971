"""Throughput benchmark: the engine's own limit, Headrace through its local stack, a naive
one-job-at-a-time worker and (optionally) Hugging Face transformers, on one model and one job
set. Run it with ``python -m bench`` (``--help`` for the options)."""
