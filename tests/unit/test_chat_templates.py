"""Chat templates rendered as transformers' apply_chat_template renders them: templates of the
kinds models ship (Llama 2's, ChatML), their helpers, and where a template is found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from headrace.api import chat_templates
from headrace.api.chat_templates import TemplateBroken, TemplateCache, compile_template
from headrace.api.services import ApiServices
from headrace.core.errors import InvalidRequest, NotFound
from headrace.core.settings import Settings
from headrace.dev.model.build import DEV_CHAT_TEMPLATE

# Llama 2's template as its tokenizer_config.json ships it (meta-llama/Llama-2-7b-chat-hf).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
# ChatML (Qwen, many others), laid out on lines: trim_blocks drops the newline after a block
# tag, lstrip_blocks the indent before one, as transformers renders it.
CHATML = (
    "{% for message in messages %}\n"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}\n"
    "  {% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


def test_llama2_with_its_tokens_as_added_tokens() -> None:
    config = {
        "chat_template": LLAMA2,
        "bos_token": {"__type": "AddedToken", "content": "<s>", "special": True},
        "eos_token": {"__type": "AddedToken", "content": "</s>", "special": True},
    }
    rendered = compile_template(config).render(CONVERSATION)
    # The first <s> is left to the worker, which starts every prompt with the begin token.
    assert rendered == (
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]"
    )


def test_raise_exception_is_a_400_naming_the_messages() -> None:
    template = compile_template({"chat_template": LLAMA2, "bos_token": "<s>", "eos_token": "</s>"})
    with pytest.raises(InvalidRequest, match=r"^messages: .*roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_chatml_blocks_are_trimmed_as_transformers_trims_them() -> None:
    rendered = compile_template({"chat_template": CHATML}).render(CONVERSATION[:2])
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_helpers_and_tags_of_transformers() -> None:
    source = (
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% if loop.index > 1 %}{% break %}{% endif %}{% endfor %}"
        "|{{ messages[0] | tojson }}|{{ strftime_now('%Y') | length }}|{{ add_generation_prompt }}"
    )
    messages = [{"role": "user", "content": "<é>"}, {"role": "user", "content": "&"}, {}]
    # tojson as transformers defines it: no HTML escapes, non-ASCII kept.
    assert compile_template({"chat_template": source}).render(messages) == (
        '<é>&|{"role": "user", "content": "<é>"}|4|True'
    )


def test_a_template_cannot_reach_out_of_its_sandbox() -> None:
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(InvalidRequest, match=r"^messages: "):
        compile_template({"chat_template": escape}).render([])


def test_named_templates_and_the_separate_file() -> None:
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]
    assert compile_template({"chat_template": named}).render([]) == "plain"
    # transformers 4.51+ saves chat_template.jinja beside the config; it wins.
    assert compile_template({"chat_template": "old"}, "new").render([]) == "new"
    with pytest.raises(NotFound):
        compile_template({"bos_token": "<s>"})
    with pytest.raises(TemplateBroken) as broken:
        compile_template({"chat_template": "{% for %}"})
    assert broken.value.status_code == 500


def test_the_dev_models_template() -> None:
    config = {"chat_template": DEV_CHAT_TEMPLATE, "bos_token": "<|e|>", "eos_token": "<|e|>"}
    assert compile_template(config).render(CONVERSATION) == (
        "System: Be brief.\nUser: Hi\nAssistant: Hello\n<|e|>User: Bye\nAssistant:"
    )


def test_a_template_is_read_once_per_process_until_it_may_have_changed() -> None:
    reads: list[str] = []
    files = {"tokenizer_config.json": json.dumps({"chat_template": "v1"}).encode()}

    def load(location: str, name: str) -> bytes | None:
        reads.append(name)
        return files.get(name)

    cache = TemplateCache()
    first = cache.get("s3://b/m", 100.0, load)
    assert first is not None and first.render([]) == "v1"
    assert cache.get("s3://b/m", 100.0 + chat_templates.CACHE_SECONDS - 1, load) is first
    assert reads == ["tokenizer_config.json", "chat_template.jinja"]
    files.clear()  # the artifact was replaced by one without a template
    assert cache.get("s3://b/m", 100.0 + chat_templates.CACHE_SECONDS, load) is None


def test_a_local_model_without_a_template_answers_400(tmp_path: Path) -> None:
    with_template = tmp_path / "chatty"
    with_template.mkdir()
    config: dict[str, Any] = {"chat_template": "{{ messages[0]['content'] }}!"}
    (with_template / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "plain").mkdir()
    zoo = {"chatty": str(with_template), "plain": str(tmp_path / "plain")}
    services = ApiServices(settings=Settings(model_zoo=zoo), dynamodb=None, sqs=None)
    said = [{"role": "user", "content": "hey"}]
    assert chat_templates.render_prompt(services, "chatty", said) == "hey!"
    with pytest.raises(InvalidRequest, match=r"^messages: model 'plain' has no chat template"):
        chat_templates.render_prompt(services, "plain", said)


def test_a_config_that_is_not_json_is_the_deployments_fault() -> None:
    def load(location: str, name: str) -> bytes | None:
        return b"{not json" if name == "tokenizer_config.json" else None

    with pytest.raises(TemplateBroken):
        TemplateCache().get("s3://b/broken", 0.0, load)
