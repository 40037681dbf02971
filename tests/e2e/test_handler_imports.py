"""A Lambda loads only what it serves: every cold start pays for each import. Each handler
module of template.yaml is imported in a fresh interpreter (the only way to a fresh
sys.modules), which is why this lives with the tests that start processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra.event_sources import event_source_mappings
from infra.template import http_routes, load_template, websocket_routes

TEMPLATE = load_template()
HANDLERS = (
    [r.handler for r in http_routes(TEMPLATE)]
    + [r.handler for r in websocket_routes(TEMPLATE)]
    + [m.handler for m in event_source_mappings(TEMPLATE)]
)
HANDLER_MODULES = sorted({handler.rpartition(".")[0] for handler in HANDLERS})
# The client, the dev stack, the CLI, the worker and its engine: none of them serves a request.
NOT_IN_A_LAMBDA = (
    "headrace.client",
    "headrace.dev",
    "headrace.cli",
    "worker",
    "aiohttp",
    "ctranslate2",
    "tokenizers",
)
LOADED_MODULES = (
    "import importlib, json, sys; importlib.import_module(sys.argv[1]);"
    " print(json.dumps(sorted(sys.modules)))"
)


def test_the_template_names_the_handler_modules() -> None:
    assert HANDLER_MODULES == [
        "handlers.batch_fanout",
        "handlers.batch_files",
        "handlers.batch_progress",
        "handlers.batches",
        "handlers.cancel",
        "handlers.intake",
        "handlers.job_events",
        "handlers.model_endpoints",
        "handlers.openai_chat",
        "handlers.openai_completions",
        "handlers.openai_models",
        "handlers.retry",
        "handlers.status",
        "handlers.submit",
        "handlers.webhook_sender",
        "handlers.webhooks",
        "handlers.websocket",
    ]


@pytest.mark.parametrize("module", HANDLER_MODULES)
def test_a_handler_module_loads_nothing_it_does_not_serve(module: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = json.loads(loaded.stdout)
    assert module in modules
    unwanted = [
        name
        for name in modules
        if any(name == package or name.startswith(package + ".") for package in NOT_IN_A_LAMBDA)
    ]
    assert unwanted == [], f"importing {module} loads {unwanted}"


@pytest.mark.parametrize("module", ["handlers.openai_completions", "handlers.openai_models"])
def test_only_chat_loads_the_template_engine(module: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "jinja2" not in json.loads(loaded.stdout)
