"""A job's decoder progress cut into stream events, from what earlier events already showed.

Each function takes the text and tokens sent so far and returns the new events (each with the
token ids it carries) and the new counts: one event per token (LLM Engine's stream shape when
the request asks for log probs), or one coalesced event per flush.
"""

from __future__ import annotations

from headrace.core.contracts import StreamEvent, StreamOutput, TokenOutput
from headrace.core.control import halt_error
from worker.progress import Progress

# WebSocket messages are limited to 128 KB. A delta of 16,384 characters stays under 64 KB of
# JSON even when every character takes 4 bytes.
MAX_DELTA_CHARS = 16_384

NewEvents = list[tuple[StreamEvent, list[int]]]


def events_per_token(
    request_id: str, progress: Progress, text_sent: int, tokens_sent: int
) -> tuple[NewEvents, int, int]:
    """(events, text sent, tokens sent): one event per new token, each with its log prob."""
    text, num_tokens, finished = progress.text, progress.num_tokens, progress.finished
    new: NewEvents = []
    for index in range(tokens_sent, num_tokens):
        at = index - progress.since
        last = finished and index == num_tokens - 1
        end = len(text) if last else progress.visible_after[at]
        delta = text[text_sent : max(text_sent, end)]
        token = progress.tokens[at] if at < len(progress.tokens) else None
        new.append(
            _event(request_id, delta, index + 1, last, progress, token, [progress.token_ids[at]])
        )
        text_sent += len(delta)
    if finished and not new:
        new.append(_event(request_id, text[text_sent:], num_tokens, True, progress, None, []))
        text_sent = len(text)
    return new, text_sent, num_tokens


def coalesced_events(
    request_id: str, progress: Progress, text_sent: int, tokens_sent: int
) -> tuple[NewEvents, int, int]:
    """(events, text sent, tokens sent): the new text as one event (more if it is too long for
    one WebSocket message); none if there is nothing new."""
    text, num_tokens, finished = progress.text, progress.num_tokens, progress.finished
    delta = text[text_sent:]
    ids = list(progress.token_ids[tokens_sent - progress.since :])
    if not delta and not finished and not ids:
        return [], text_sent, tokens_sent
    pieces = [delta[i : i + MAX_DELTA_CHARS] for i in range(0, len(delta), MAX_DELTA_CHARS)]
    pieces = pieces or [""]
    new: NewEvents = []
    for i, piece in enumerate(pieces):
        last_piece = i == len(pieces) - 1
        new.append(
            _event(
                request_id,
                piece,
                num_tokens,
                finished and last_piece,
                progress,
                None,
                ids if last_piece else [],
            )
        )
    return new, len(text), num_tokens


def _event(
    request_id: str,
    delta: str,
    num_tokens: int,
    finished: bool,
    progress: Progress,
    token: TokenOutput | None,
    token_ids: list[int],
) -> tuple[StreamEvent, list[int]]:
    # A job stopped early says why in its last event (headrace.core.control).
    halted = progress.halted if finished else None
    return (
        StreamEvent(
            request_id=request_id,
            output=StreamOutput(
                text=delta,
                finished=finished,
                num_prompt_tokens=progress.num_prompt_tokens if finished else None,
                num_completion_tokens=num_tokens,
                token=token,
            ),
            error=halt_error(halted) if halted else None,
        ),
        token_ids,
    )
