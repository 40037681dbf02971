"""What AWS deploys from template.yaml (the SAM transform's output, infra/sam_transform.py) keeps
the scaling invariants: GPU capacity from zero, the 0->1 alarm wired to its policy, tasks placed
by the capacity provider, scale-in protection allowed, a stop timeout past the longest job, and
IAM without "*" where a narrower grant exists. (That cfn-lint passes the same output:
tests/e2e/test_template_transform.py.)"""

from __future__ import annotations

import math
from typing import Any

import pytest

from headrace.core.settings import Settings
from infra.sam_transform import transform
from infra.template import load_template
from worker.engine import default_batching, default_threads

# The only grants of Resource "*" (role, action), each because nothing narrower exists or is
# ours to narrow. README "Deploying to AWS" lists them with the same reasons.
STAR_RESOURCE_EXCEPTIONS = {
    # ECR authorizes the registry login itself only on "*".
    ("WorkerExecutionRole", "ecr:GetAuthorizationToken"),
}
# AWS-managed policies attached whole, each with "*" inside.
MANAGED_POLICY_EXCEPTIONS = {
    # The ECS agent's policy for container instances: most of its ECS actions allow only "*".
    "service-role/AmazonEC2ContainerServiceforEC2Role",
    # SAM gives every function this (CloudWatch Logs on "*"); narrowing it means a log group
    # per function, a change to the functions themselves.
    "service-role/AWSLambdaBasicExecutionRole",
}
# Slowest decoding rate assumed for one sequence of a full batch on the GPU (tokens/s), and the
# time for the longest prompt's prefill: the longest job allowed is max_new_tokens_limit at
# that rate plus the prefill.
SLOWEST_TOKENS_PER_SECOND = 20
PREFILL_SECONDS = 10


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def deployed() -> dict[str, Any]:
    return transform(parameters={"WorkerImageUri": "example/worker:1"})


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = template["Resources"][logical_id]
    return found


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    found: dict[str, Any] = resource(template, logical_id)["Properties"]
    return found


def test_gpu_capacity_starts_at_zero(deployed: dict[str, Any]) -> None:
    group = props(deployed, "WorkerAutoScalingGroup")
    assert group["MinSize"] == "0"
    assert "DesiredCapacity" not in group
    assert group["NewInstancesProtectedFromScaleIn"] is True
    assert group["MaxSize"] == {"Ref": "WorkerMaxCount"}
    override = group["MixedInstancesPolicy"]["LaunchTemplate"]["Overrides"][0]
    assert override["InstanceRequirements"]["AllowedInstanceTypes"] == {
        "Ref": "WorkerInstanceTypes"
    }
    target = props(deployed, "WorkerScalableTarget")
    assert target["MinCapacity"] == 0
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"


def test_instances_run_the_ecs_gpu_ami_from_its_public_parameter(
    source: dict[str, Any], deployed: dict[str, Any]
) -> None:
    parameter = source["Parameters"]["WorkerAmiId"]
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert parameter["Default"] == (
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    )
    data = props(deployed, "WorkerLaunchTemplate")["LaunchTemplateData"]
    assert data["ImageId"] == {"Ref": "WorkerAmiId"}
    assert data["MetadataOptions"]["HttpTokens"] == "required"


def test_the_capacity_provider_manages_scaling_protection_and_draining(
    deployed: dict[str, Any],
) -> None:
    provider = props(deployed, "WorkerCapacityProvider")["AutoScalingGroupProvider"]
    assert provider["AutoScalingGroupArn"] == {"Ref": "WorkerAutoScalingGroup"}
    assert provider["ManagedScaling"]["Status"] == "ENABLED"
    assert provider["ManagedTerminationProtection"] == "ENABLED"
    assert provider["ManagedDraining"] == "ENABLED"
    cluster = props(deployed, "WorkerCluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]


def test_the_service_is_placed_by_the_capacity_provider_without_a_desired_count(
    deployed: dict[str, Any],
) -> None:
    service = resource(deployed, "WorkerService")
    assert service["DependsOn"] == "WorkerClusterCapacityProviders"
    properties = service["Properties"]
    assert properties["CapacityProviderStrategy"] == [
        {"CapacityProvider": {"Ref": "WorkerCapacityProvider"}, "Weight": 1, "Base": 0}
    ]
    assert "DesiredCount" not in properties
    assert "LaunchType" not in properties
    (container,) = props(deployed, "WorkerTaskDefinition")["ContainerDefinitions"]
    assert container["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]


def _metric_queues(metrics: list[dict[str, Any]]) -> set[tuple[str, str]]:
    found = set()
    for metric in metrics:
        stat = metric.get("MetricStat", {}).get("Metric", {})
        for dimension in stat.get("Dimensions", []):
            if dimension["Name"] == "QueueName":
                queue = dimension["Value"]["Fn::GetAtt"][0]
                found.add((queue, stat["MetricName"]))
    return found


def test_target_tracking_counts_both_lanes_visible_and_in_flight_per_task(
    source: dict[str, Any], deployed: dict[str, Any]
) -> None:
    policy = props(deployed, "WorkerBacklogScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == {"Ref": "WorkerScalableTarget"}
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == {"Ref": "WorkerTargetBacklogPerWorker"}
    assert config["ScaleInCooldown"] == {"Ref": "WorkerScaleInCooldownSeconds"}
    metrics = config["CustomizedMetricSpecification"]["Metrics"]
    assert _metric_queues(metrics) == {
        (queue, name)
        for queue in ("JobsQueue", "BatchJobsQueue")
        for name in ("ApproximateNumberOfMessagesVisible", "ApproximateNumberOfMessagesNotVisible")
    }
    (returned,) = [m for m in metrics if m["ReturnData"]]
    for metric in metrics:
        if metric is not returned:
            assert metric["Id"] in returned["Expression"]
    # The target is one worker's jobs in service at full load on CUDA: its batch width.
    replicas, _ = default_threads("cuda")
    width = default_batching("cuda").max_batch_size * replicas
    assert source["Parameters"]["WorkerTargetBacklogPerWorker"]["Default"] == width


def test_the_wake_alarm_sets_exactly_one_task_when_jobs_wait_and_none_is_desired(
    deployed: dict[str, Any],
) -> None:
    alarm = props(deployed, "WorkerWakeAlarm")
    assert alarm["AlarmActions"] == [{"Ref": "WorkerWakeScalingPolicy"}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["EvaluationPeriods"] == 1
    assert _metric_queues(alarm["Metrics"]) == {
        ("JobsQueue", "ApproximateNumberOfMessagesVisible"),
        ("BatchJobsQueue", "ApproximateNumberOfMessagesVisible"),
    }
    desired = [m for m in alarm["Metrics"] if "MetricStat" in m and "Queue" not in str(m)]
    assert [m["MetricStat"]["Metric"]["MetricName"] for m in desired] == ["DesiredTaskCount"]
    (expression,) = [m["Expression"] for m in alarm["Metrics"] if m["ReturnData"]]
    assert "== 0" in expression
    policy = props(deployed, "WorkerWakeScalingPolicy")
    assert policy["PolicyType"] == "StepScaling"
    assert policy["ScalingTargetId"] == {"Ref": "WorkerScalableTarget"}
    step = policy["StepScalingPolicyConfiguration"]
    assert step["AdjustmentType"] == "ExactCapacity"
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_task_role_may_protect_the_clusters_tasks_and_no_more(
    deployed: dict[str, Any],
) -> None:
    statements = _statements(resource(deployed, "WorkerTaskRole"))
    (protection,) = [s for s in statements if "ecs:UpdateTaskProtection" in _listed(s["Action"])]
    assert set(_listed(protection["Action"])) == {
        "ecs:UpdateTaskProtection",
        "ecs:GetTaskProtection",
    }
    assert protection["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:"
        "task/${WorkerCluster}/*"
    }


def test_the_stop_timeout_outlasts_the_longest_job(
    source: dict[str, Any], deployed: dict[str, Any]
) -> None:
    (container,) = props(deployed, "WorkerTaskDefinition")["ContainerDefinitions"]
    assert container["StopTimeout"] == {
        "Fn::FindInMap": ["WorkerStopTimeouts", {"Ref": "WorkerLongestJobSeconds"}, "Seconds"]
    }
    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert environment["HEADRACE_SHUTDOWN_GRACE_SECONDS"] == {"Ref": "WorkerLongestJobSeconds"}
    parameter = source["Parameters"]["WorkerLongestJobSeconds"]
    timeouts = source["Mappings"]["WorkerStopTimeouts"]
    assert {str(v) for v in parameter["AllowedValues"]} == set(timeouts)
    for longest, row in timeouts.items():
        assert row["Seconds"] >= int(longest) + 30, longest
    decode = Settings().max_new_tokens_limit / SLOWEST_TOKENS_PER_SECOND
    assert parameter["Default"] >= math.ceil(decode + PREFILL_SECONDS)


def test_no_iam_star_where_a_narrower_grant_exists(deployed: dict[str, Any]) -> None:
    roles = {k: r for k, r in deployed["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert {"WorkerTaskRole", "WorkerExecutionRole", "WorkerInstanceRole"} <= set(roles)
    star_grants: set[tuple[str, str]] = set()
    for name, role in roles.items():
        for statement in _statements(role):
            actions = _listed(statement["Action"])
            assert all("*" not in action for action in actions), (name, actions)
            if "*" in _listed(statement["Resource"]):
                star_grants.update((name, action) for action in actions)
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            text = arn if isinstance(arn, str) else arn["Fn::Sub"]
            assert text.split(":policy/")[1] in MANAGED_POLICY_EXCEPTIONS, (name, text)
    assert star_grants == STAR_RESOURCE_EXCEPTIONS


def test_custom_network_parameters_transform(source: dict[str, Any]) -> None:
    custom = transform(
        parameters={
            "WorkerImageUri": "example/worker:1",
            "WorkerVpcId": "vpc-0123456789abcdef0",
            "WorkerSubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
            "WorkerInstanceTypes": "g6.2xlarge",
            "WorkerLongestJobSeconds": "600",
        }
    )
    group = props(custom, "WorkerAutoScalingGroup")
    assert group["VPCZoneIdentifier"]["Fn::If"][0] == "CreateWorkerVpc"
    assert resource(custom, "WorkerVpc")["Condition"] == "CreateWorkerVpc"
    assert "HasWorkerVpcId" in custom["Conditions"]
    with pytest.raises(ValueError, match="NoSuchParameter"):
        transform(parameters={"NoSuchParameter": "1"})
