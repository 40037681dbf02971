"""cfn-lint passes what AWS deploys: template.yaml through the SAM transform (aws-sam-translator,
offline), with its default parameters and with custom ones, then cfn-lint on the CloudFormation
that comes out. A fault only the generated template shows (a bad reference in a function's
Policies, which becomes an IAM role) fails it."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.sam_transform import transform
from infra.template import load_template

CUSTOM = {
    "WorkerImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/headrace-worker:1",
    "WorkerVpcId": "vpc-0123456789abcdef0",
    "WorkerSubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    "WorkerInstanceTypes": "g6.2xlarge,g5.2xlarge",
    "WorkerMaxCount": "32",
    "WorkerTargetBacklogPerWorker": "128",
    "WorkerScaleInCooldownSeconds": "900",
    "WorkerLongestJobSeconds": "600",
    "WorkerOnDemandPercentage": "0",
    "ModelZoo": '{"gpt2": "s3://example-models/models/gpt2"}',
}


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("cfn-lint")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]
    )
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    return subprocess.run(
        [*command, "--", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _with_values(template: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """The template with `values` as its parameters' defaults, so cfn-lint checks them too."""
    result = copy.deepcopy(template)
    for name, value in values.items():
        parameter = result["Parameters"][name]
        parameter["Default"] = int(value) if isinstance(parameter.get("Default"), int) else value
    return result


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default-parameters", "custom-parameters"])
def test_the_generated_template_lints_clean(tmp_path: Path, values: dict[str, str]) -> None:
    generated = _with_values(transform(parameters=values), values)
    assert "Transform" not in generated
    assert not any(
        r["Type"].startswith("AWS::Serverless::") for r in generated["Resources"].values()
    )
    path = tmp_path / "template.json"
    path.write_text(json.dumps(generated))
    result = _cfn_lint(path)
    assert result.returncode == 0, f"cfn-lint:\n{result.stdout}\n{result.stderr}"


def test_a_fault_in_the_generated_roles_fails_the_lint(tmp_path: Path) -> None:
    source = load_template()
    statement = source["Resources"]["SubmitAsyncFunction"]["Properties"]["Policies"][0]
    statement["Statement"][0]["Resource"] = {"Fn::GetAtt": ["NoSuchTable", "Arn"]}
    path = tmp_path / "template.json"
    path.write_text(json.dumps(transform(source)))
    result = _cfn_lint(path)
    assert result.returncode != 0
    assert "NoSuchTable" in result.stdout
