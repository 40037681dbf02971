"""Chat templates: a model's own `chat_template`, rendered as `transformers`' apply_chat_template
renders it, into the prompt a chat job decodes.

The template is the Hugging Face convention: `chat_template` in the `tokenizer_config.json` beside
the model (or, as transformers 4.51 and later save it, a `chat_template.jinja` file), a Jinja2
template given `messages`, `add_generation_prompt`, the special tokens (`bos_token`,
`eos_token`, ...) and the helper `raise_exception`. It is rendered here, in the API, from the
artifact the zoo names (read once per process and model, again after `CACHE_SECONDS`): so a
model without a template, or a conversation its template refuses, is a 400 before any job
exists, and the job holds the very prompt its worker decodes, under the same limits and
Idempotency-Key fingerprint as any other.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from headrace.api.services import ApiServices
from headrace.core.aws_calls import call_aws
from headrace.core.errors import HeadraceError, InvalidRequest, NotFound

CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
# A model's artifact may be replaced in place (the worker picks the new one up when it restarts):
# a warm process reads the template again after this long.
CACHE_SECONDS = 300.0
_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")


class TemplateBroken(HeadraceError):
    """The model's template does not compile: the deployment's fault, not the request's."""

    status_code = 500


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: transformers marks the assistant's tokens with
    it (for training masks); rendered, it is its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja2 declares it so

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' own `tojson`: Jinja2's escapes HTML, which would change the prompt.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return dt.datetime.now().strftime(format)


def _environment() -> ImmutableSandboxedEnvironment:
    # The same environment as transformers' _compile_jinja_template: sandboxed, immutable,
    # trim_blocks and lstrip_blocks, loop controls, and its globals and filter.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


@dataclass(frozen=True)
class ChatTemplate:
    template: jinja2.Template
    special_tokens: dict[str, str]

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt for `messages`, ending where the assistant's answer begins.

        A template's refusal (`raise_exception`, e.g. roles that do not alternate) or failure
        is an InvalidRequest naming `messages`."""
        try:
            text = self.template.render(
                messages=messages,
                add_generation_prompt=True,
                tools=None,
                documents=None,
                **self.special_tokens,
            )
        except jinja2.TemplateError as e:
            raise InvalidRequest(f"messages: the model's chat template refused them: {e}") from e
        # The worker starts every prompt with the model's begin token itself (the tokenizer's
        # post-processor or worker/decoding.py): one the template writes first would be doubled,
        # which transformers avoids by tokenizing without special tokens.
        bos = self.special_tokens.get("bos_token")
        if bos and text.startswith(bos):
            text = text[len(bos) :]
        return text


def compile_template(config: dict[str, Any], template_text: str | None = None) -> ChatTemplate:
    """A ChatTemplate from a tokenizer_config.json's content (and a chat_template.jinja's, which
    wins as in transformers); NotFound if neither holds a template."""
    source = template_text if template_text is not None else _template_source(config)
    if not source:
        raise NotFound("no chat template")
    tokens = {name: token for name in _SPECIAL_TOKENS if (token := _token(config.get(name)))}
    try:
        return ChatTemplate(_ENV.from_string(source), tokens)
    except jinja2.TemplateError as e:
        raise TemplateBroken(f"the model's chat template does not compile: {e}") from e


def _template_source(config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _token(value: Any) -> str | None:
    # A special token is a string, or an AddedToken as a dict with its "content".
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


Loader = Callable[[str, str], bytes | None]  # (artifact location, file name) -> content or None


class TemplateCache:
    """Each model's ChatTemplate (or its lack of one), read from its artifact once per process
    and again after CACHE_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ChatTemplate | None]] = {}

    def get(self, location: str, now: float, load: Loader) -> ChatTemplate | None:
        with self._lock:
            entry = self._entries.get(location)
        if entry is not None and entry[0] > now:
            return entry[1]
        config_bytes = load(location, CONFIG_FILE)
        template_bytes = load(location, TEMPLATE_FILE)
        try:
            config = json.loads(config_bytes) if config_bytes else {}
            template_text = template_bytes.decode() if template_bytes else None
        except ValueError as e:  # not JSON, or not UTF-8
            raise TemplateBroken(f"the model's {CONFIG_FILE} cannot be read: {e}") from e
        if not isinstance(config, dict):
            raise TemplateBroken(f"the model's {CONFIG_FILE} is not a JSON object")
        try:
            found: ChatTemplate | None = compile_template(config, template_text)
        except NotFound:
            found = None
        with self._lock:
            self._entries[location] = (now + CACHE_SECONDS, found)
        return found


_CACHE = TemplateCache()


def render_prompt(services: ApiServices, model: str, messages: list[dict[str, Any]]) -> str:
    """The prompt of a chat request to `model` (a model of the zoo): InvalidRequest if the model
    has no chat template or its template refuses the messages."""
    location = services.settings.model_zoo[model]
    template = _CACHE.get(location, services.clock(), lambda loc, name: _read(services, loc, name))
    if template is None:
        raise InvalidRequest(
            f"messages: model {model!r} has no chat template (no chat_template in its"
            f" {CONFIG_FILE}): use /v1/completions with a prompt"
        )
    return template.render(messages)


def _read(services: ApiServices, location: str, name: str) -> bytes | None:
    """A file of a model's artifact (S3 or a local directory); None if there is none."""
    if not location.startswith("s3://"):
        path = Path(location).expanduser() / name
        return path.read_bytes() if path.is_file() else None
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{name}" if prefix.strip("/") else name
    try:
        found = call_aws(services.s3.get_object, Bucket=bucket, Key=key)
    except NotFound:
        return None
    body: bytes = found["Body"].read()
    return body
