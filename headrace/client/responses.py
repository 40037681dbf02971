"""What the client returns, shaped like the LLM Engine client's responses."""

from __future__ import annotations

from typing import Any

from headrace.core import contracts
from headrace.core.contracts import JobView, StreamEvent


class CompletionSyncResponse(contracts.CompletionSyncResponse):
    """A finished completion: `request_id` and `output` (text, token counts, tokens)."""

    def json(self, **kwargs: Any) -> str:
        """The response as a JSON string, as the API sends it (no null fields)."""
        kwargs.setdefault("exclude_none", True)
        return self.model_dump_json(**kwargs)


class CompletionStreamResponse(StreamEvent):
    """One streamed event: `output.text` is the delta since the previous event; the last one
    has `output.finished` true, or `error` set (and `output` None)."""

    def json(self, **kwargs: Any) -> str:
        kwargs.setdefault("exclude_none", True)
        return self.model_dump_json(**kwargs)


def job_view(payload: Any) -> JobView:
    return JobView.model_validate(payload)
