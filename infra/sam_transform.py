"""template.yaml as CloudFormation receives it: the SAM transform, run offline.

`aws-sam-translator` (the library behind `sam deploy` and CloudFormation's SAM transform) turns
the AWS::Serverless resources into the functions, roles, permissions and stages they stand
for. cfn-lint and checkov then check that output, which is what AWS deploys (tests/e2e/
test_template_transform.py, `make audit`).

    python -m infra.sam_transform --parameter WorkerImageUri=repo/worker:1 > build/template.json

A development tool: it needs the `dev` extra (aws-sam-translator), not the worker or handlers.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from infra.template import load_template, resources_of_type

# What `sam build`/`sam package` would put in place of the local code directory.
CODE_PLACEHOLDER = "s3://headrace-code-placeholder/handlers.zip"
DEFAULT_REGION = "us-east-1"


def _with_packaged_code(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `template` whose local CodeUri values point at an S3 object, as after
    `sam package`: the translator refuses a local path."""
    packaged = copy.deepcopy(dict(template))
    function_globals = packaged.get("Globals", {}).get("Function", {})
    if isinstance(function_globals.get("CodeUri"), str):
        function_globals["CodeUri"] = CODE_PLACEHOLDER
    for function in resources_of_type(packaged, "AWS::Serverless::Function").values():
        properties = function.get("Properties", {})
        if isinstance(properties.get("CodeUri"), str):
            properties["CodeUri"] = CODE_PLACEHOLDER
    return packaged


def transform(
    template: Mapping[str, Any] | None = None,
    *,
    parameters: Mapping[str, str] | None = None,
    region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """The CloudFormation template the SAM transform makes of `template` (default:
    template.yaml) with the given parameter values (the others keep their defaults)."""
    source = _with_packaged_code(load_template() if template is None else template)
    declared = source.get("Parameters", {})
    unknown = sorted(set(parameters or {}) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameters: {', '.join(unknown)}")
    translator = Translator(
        managed_policy_map={},
        sam_parser=Parser(),
        boto_session=boto3.session.Session(region_name=region),
    )
    translated: dict[str, Any] = translator.translate(
        sam_template=source, parameter_values=dict(parameters or {})
    )
    return translated


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="template parameter value (repeatable)",
    )
    parser.add_argument("--output", help="write here instead of standard output")
    args = parser.parse_args(argv)
    parameters = dict(item.split("=", 1) for item in args.parameter)
    document = json.dumps(transform(parameters=parameters, region=args.region), indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(document + "\n")
    else:
        sys.stdout.write(document + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
