"""Submit, poll and sync over HTTP through the local gateway, decoded by a real worker."""

from __future__ import annotations

from pathlib import Path

import ctranslate2
import pytest
from tokenizers import Tokenizer

from headrace.dev.model import DEV_MODEL_NAME
from tests.e2e.support import Api


def decode_directly(model_dir: Path, prompt: str, max_new_tokens: int) -> tuple[str, int, int]:
    """What the engine itself gives, greedy: (text, prompt tokens, completion tokens)."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    start = ["<|endoftext|>", *tokenizer.encode(prompt).tokens]
    generator = ctranslate2.Generator(str(model_dir), device="cpu")
    try:
        result = generator.generate_batch(
            [start], max_length=max_new_tokens, sampling_topk=1, include_prompt_in_result=False
        )[0]
    finally:
        del generator
    ids = [i for i in result.sequences_ids[0] if i != tokenizer.token_to_id("<|endoftext|>")]
    return tokenizer.decode(ids), len(start), len(ids)


@pytest.mark.parametrize("prompt", ["The river", "Workers take jobs from the queue", "日本語 🚀"])
def test_submit_then_poll_gives_the_engines_greedy_text(
    api: Api, dev_model_dir: Path, prompt: str
) -> None:
    request_id = api.submit({"prompt": prompt, "max_new_tokens": 24, "temperature": 0})
    job = api.wait(request_id)

    text, prompt_tokens, completion_tokens = decode_directly(dev_model_dir, prompt, 24)
    assert job["status"] == "SUCCEEDED", job
    assert job["request_id"] == request_id
    assert job["attempts"] == 1
    assert job["output"] == {
        "text": text,
        "num_prompt_tokens": prompt_tokens,
        "num_completion_tokens": completion_tokens,
    }
    assert completion_tokens > 0
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_sync_route_answers_200_with_the_llm_engine_shape(api: Api, dev_model_dir: Path) -> None:
    status, body = api.call(
        "POST",
        f"/v1/llm/completions-sync?model_endpoint_name={DEV_MODEL_NAME}",
        {"prompt": "The mill", "max_new_tokens": 16, "temperature": 0},
    )
    text, prompt_tokens, completion_tokens = decode_directly(dev_model_dir, "The mill", 16)
    assert status == 200, body
    assert set(body) == {"request_id", "output"}
    assert body["output"] == {
        "text": text,
        "num_prompt_tokens": prompt_tokens,
        "num_completion_tokens": completion_tokens,
    }


def test_model_in_the_body_and_log_probs(api: Api) -> None:
    status, answer = api.call(
        "POST",
        "/v1/llm/completions-async",
        {
            "model": DEV_MODEL_NAME,
            "prompt": "Water",
            "max_new_tokens": 8,
            "temperature": 0,
            "return_token_log_probs": True,
        },
    )
    assert status == 202 and answer["status"] == "QUEUED", answer
    output = api.wait(answer["request_id"])["output"]
    assert len(output["tokens"]) == output["num_completion_tokens"] == 8
    assert "".join(t["token"] for t in output["tokens"]) == output["text"]
    assert all(t["log_prob"] <= 0 for t in output["tokens"])


def test_sampling_respects_max_new_tokens(api: Api) -> None:
    ids = [
        api.submit({"prompt": "The wheel", "max_new_tokens": 12, "temperature": 0.9, "top_k": 20})
        for _ in range(4)
    ]
    for request_id in ids:
        output = api.wait(request_id)["output"]
        assert 1 <= output["num_completion_tokens"] <= 12


def test_stop_sequences_cut_the_text(api: Api) -> None:
    base = {"prompt": "The river", "max_new_tokens": 40, "temperature": 0}
    full = api.wait(api.submit(base))["output"]["text"]
    stop = full.split()[2]  # a word that occurs in the greedy text
    cut_at = full.index(stop)

    without = api.wait(api.submit({**base, "stop_sequences": [stop]}))["output"]
    with_stop = api.wait(
        api.submit({**base, "stop_sequences": [stop], "include_stop_str_in_output": True})
    )["output"]
    assert without["text"] == full[:cut_at]
    assert with_stop["text"] == full[: cut_at + len(stop)]
    assert without["num_completion_tokens"] < 40


def test_model_endpoints_list_the_served_dev_model(api: Api) -> None:
    status, body = api.call("GET", "/v1/llm/model-endpoints")
    assert status == 200
    assert body["default_model"] == DEV_MODEL_NAME
    [endpoint] = body["model_endpoints"]
    assert endpoint["name"] == DEV_MODEL_NAME
    assert endpoint["served"] is True
