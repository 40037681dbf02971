"""`headrace keys create | list | revoke`: API keys of a stack, straight in its DynamoDB table.

The stack is the deployed one named by HEADRACE_* settings when HEADRACE_TABLE_NAME is set (with
the caller's AWS credentials), else the running `headrace dev` (its dev-stack.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headrace.client.dev_state import dev_state_path, read_dev_state
from headrace.core.key_ids import public_key_id

if TYPE_CHECKING:  # the service modules load boto3: only a command that runs imports them
    from headrace.api.services import ApiServices

KeyCommand = Callable[[argparse.Namespace, "ApiServices"], int]

_STACK_HELP = (
    "The stack: the one HEADRACE_TABLE_NAME names (with HEADRACE_REGION; AWS credentials as "
    "usual), else the running `headrace dev`."
)


class KeyCommandError(Exception):
    """No stack to talk to, reported as one line."""


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add `keys` and its subcommands to the `headrace` parser."""
    keys = commands.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description=f"Manage the API keys of a stack. {_STACK_HELP}",
    )
    keys.set_defaults(run=lambda args: _usage(keys))
    actions = keys.add_subparsers(title="key commands", metavar="COMMAND")

    create = actions.add_parser(
        "create",
        help="create a key; prints it once, and its id",
        description="Create a random API key. It is printed once: only its hash is stored; "
        f"its id is hk_ and the hash. {_STACK_HELP}",
    )
    create.add_argument("--name", required=True, help="what the key is for (shown by list)")
    create.add_argument("--json", action="store_true", help='print {"api_key", "key_id", "name"}')
    create.set_defaults(run=_run_create)

    listing = actions.add_parser(
        "list",
        help="list the keys: id, name, creation time",
        description=f"List every key of the stack (a Scan of its table). {_STACK_HELP}",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(run=_run_list)

    revoke = actions.add_parser(
        "revoke",
        help="revoke a key and close its open WebSocket connections",
        description="Delete the key and close every WebSocket connection open with it. New "
        "Lambda containers refuse it at once, warm ones within HEADRACE_API_KEY_CACHE_SECONDS "
        f"(60). Running it again closes what a failed run could not. {_STACK_HELP}",
    )
    revoke.add_argument("key", metavar="KEY_OR_ID", help="the key itself, or its id")
    revoke.set_defaults(run=_run_revoke)


def key_settings_kwargs(
    environ: Mapping[str, str] | None = None, home: Path | None = None
) -> dict[str, Any] | None:
    """Settings overrides for the stack to manage: None for the environment's HEADRACE_*
    settings (a deployed stack), else the running dev stack's table and endpoint."""
    environ = os.environ if environ is None else environ
    if environ.get("HEADRACE_TABLE_NAME"):
        return None
    state = read_dev_state(home)
    if not state.get("table_name") or not state.get("aws_endpoint_url"):
        raise KeyCommandError(
            "no stack: start `headrace dev` (a running one recorded before this version: "
            "restart it), or set HEADRACE_TABLE_NAME and HEADRACE_REGION for a deployed stack"
        )
    if not _alive(state.get("pid")):
        raise KeyCommandError(f"the dev stack recorded in {dev_state_path(home)} is not running")
    return {
        "aws_endpoint_url": state["aws_endpoint_url"],
        "table_name": state["table_name"],
        "region": state.get("region") or "us-east-1",
    }


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return True  # nothing to check against
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _services() -> ApiServices:
    from headrace.api.services import build_services
    from headrace.core.settings import Settings

    overrides = key_settings_kwargs()
    if overrides is not None:
        # The dev stack's AWS endpoint is a moto server: its dummy credentials, not the user's.
        from headrace.dev.moto import MOTO_ENV

        os.environ.update(MOTO_ENV)
    return build_services(Settings(**(overrides or {})))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _guarded(args: argparse.Namespace, run: KeyCommand) -> int:
    from headrace.core.errors import HeadraceError

    try:
        code: int = run(args, _services())
    except (KeyCommandError, HeadraceError) as e:
        print(f"headrace: {getattr(e, 'detail', e)}", file=sys.stderr, flush=True)
        return 1
    return code


def _run_create(args: argparse.Namespace) -> int:
    return _guarded(args, _create)


def _run_list(args: argparse.Namespace) -> int:
    return _guarded(args, _list)


def _run_revoke(args: argparse.Namespace) -> int:
    return _guarded(args, _revoke)


def _create(args: argparse.Namespace, services: ApiServices) -> int:
    from headrace.api import keys

    api_key, key_id = keys.create_key(services, args.name)
    public_id = public_key_id(key_id)  # what jobs, events and intake messages name
    if args.json:
        answer = {"api_key": api_key, "key_id": key_id, "id": public_id, "name": args.name.strip()}
        print(json.dumps(answer))
    else:
        print(f"API key  {api_key}\nKey id   {public_id}")
        print("Store the key now: it is not shown again.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, services: ApiServices) -> int:
    from headrace.api import keys

    records = keys.list_keys(services)
    rows = [
        {
            "key_id": r.key_id,
            "id": public_key_id(r.key_id),
            "name": r.name,
            "created_at": _iso(r.created_at),
        }
        for r in records
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['id']}  {row['created_at'] or '-':<25}  {row['name']}")
    return 0


def _revoke(args: argparse.Namespace, services: ApiServices) -> int:
    from headrace.api import keys

    done = keys.revoke_key(services, args.key)
    what = f"key {public_key_id(done.key_id)}" + (f" ({done.name})" if done.name else "")
    if done.name is None:
        what += " was already revoked"
    else:
        what = f"revoked {what}"
    print(f"{what}; closed {done.closed} open WebSocket connection(s)")
    if done.failed:
        print(
            f"headrace: {done.failed} connection(s) could not be reached; they are refused "
            "within HEADRACE_API_KEY_CACHE_SECONDS: run revoke again to close them",
            file=sys.stderr,
        )
        return 1
    return 0


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
