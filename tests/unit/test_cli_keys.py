"""`headrace keys ...`: what the parser takes, and which stack the commands would talk to."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from headrace.cli import key_commands
from headrace.cli.main import _parser, main


def test_the_key_commands_parse() -> None:
    parser = _parser()
    create = parser.parse_args(["keys", "create", "--name", "ci"])
    assert (create.run, create.name, create.json) == (key_commands._run_create, "ci", False)
    listing = parser.parse_args(["keys", "list", "--json"])
    assert (listing.run, listing.json) == (key_commands._run_list, True)
    revoke = parser.parse_args(["keys", "revoke", "hr-abc"])
    assert (revoke.run, revoke.key) == (key_commands._run_revoke, "hr-abc")


@pytest.mark.parametrize("argv", [["keys", "create"], ["keys", "revoke"], ["keys", "delete", "x"]])
def test_a_key_command_without_what_it_needs_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(argv)
    assert exited.value.code == 2
    assert "usage: headrace keys" in capsys.readouterr().err


def test_keys_alone_prints_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys"]) == 2
    usage = capsys.readouterr().err
    assert usage.startswith("usage: headrace keys")
    assert all(f"    {command} " in usage for command in ("create", "list", "revoke"))


def test_a_table_name_in_the_environment_means_that_stack(tmp_path: Path) -> None:
    assert key_commands.key_settings_kwargs({"HEADRACE_TABLE_NAME": "t"}, tmp_path) is None


def test_else_the_running_dev_stack(tmp_path: Path) -> None:
    state = {
        "aws_endpoint_url": "http://127.0.0.1:5000",
        "table_name": "headrace-JobsTable-x",
        "region": "eu-west-1",
        "pid": os.getpid(),
    }
    (tmp_path / "dev-stack.json").write_text(json.dumps(state))
    assert key_commands.key_settings_kwargs({}, tmp_path) == {
        "aws_endpoint_url": "http://127.0.0.1:5000",
        "table_name": "headrace-JobsTable-x",
        "region": "eu-west-1",
    }


def test_no_stack_at_all_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(key_commands.KeyCommandError, match="start `headrace dev`"):
        key_commands.key_settings_kwargs({}, tmp_path)
