"""template.yaml resolved for one stack: parameter values, intrinsics, creation order.

Intrinsics (!Ref, !Sub, !GetAtt, !Join, !Select, !Split) resolve against the stack name, region,
account id, the parameters (defaults, or overrides) and the resources created so far.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

SQS_QUEUE = "AWS::SQS::Queue"
DYNAMODB_TABLE = "AWS::DynamoDB::Table"
S3_BUCKET = "AWS::S3::Bucket"
EVENT_BUS = "AWS::Events::EventBus"
EVENT_RULE = "AWS::Events::Rule"
EVENT_BUS_POLICY = "AWS::Events::EventBusPolicy"
QUEUE_POLICY = "AWS::SQS::QueuePolicy"
# Created in this order when nothing else decides: the account id, if not given, is read from
# the first ARN a queue or table reports, and the bucket name needs it.
PROVISIONED_TYPES = (
    SQS_QUEUE,
    DYNAMODB_TABLE,
    S3_BUCKET,
    EVENT_BUS,
    EVENT_RULE,
    EVENT_BUS_POLICY,
    QUEUE_POLICY,
)

_NO_VALUE = object()  # AWS::NoValue: drop the property
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class ProvisionError(RuntimeError):
    """The template asks for something this provisioner cannot build, or the endpoint refused."""


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, str]
) -> dict[str, str | list[str]]:
    """Each declared parameter's value, the override else the default, checked against its spec."""
    declared: Mapping[str, Mapping[str, Any]] = template.get("Parameters", {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ProvisionError(f"unknown parameters in overrides: {', '.join(unknown)}")
    values: dict[str, str | list[str]] = {}
    for name, spec in declared.items():
        if name in overrides:
            raw = str(overrides[name])
        elif "Default" in spec:
            raw = str(spec["Default"])
        else:
            continue  # an error only if something refers to it
        values[name] = _check_parameter(name, spec, raw)
    return values


def _check_parameter(name: str, spec: Mapping[str, Any], raw: str) -> str | list[str]:
    kind = str(spec.get("Type", "String"))
    allowed = spec.get("AllowedValues")
    if allowed is not None and raw not in [str(a) for a in allowed]:
        raise ProvisionError(f"parameter {name}={raw!r} is not one of {allowed}")
    if kind == "Number":
        try:
            number = float(raw)
        except ValueError:
            raise ProvisionError(f"parameter {name}={raw!r} is not a number") from None
        if "MinValue" in spec and number < float(spec["MinValue"]):
            raise ProvisionError(f"parameter {name}={raw} is below {spec['MinValue']}")
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            raise ProvisionError(f"parameter {name}={raw} is above {spec['MaxValue']}")
    if kind == "CommaDelimitedList" or kind.startswith("List<"):
        return [item.strip() for item in raw.split(",")] if raw else []
    return raw


class StackResolver:
    """What intrinsics resolve against: pseudo parameters, parameters, resources built so far."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        stack_name: str,
        region: str,
        account_id: str | None,
        parameters: Mapping[str, str | list[str]],
    ) -> None:
        self.template = template
        self.stack_name = stack_name
        self.region = region
        self._account_id = account_id
        self.parameters = parameters
        self.refs: dict[str, str] = {}  # logical id -> what Ref returns
        self.attrs: dict[str, dict[str, str]] = {}  # logical id -> GetAtt attributes

    def created(self, logical_id: str, ref: str, attrs: Mapping[str, str]) -> None:
        self.refs[logical_id] = ref
        self.attrs[logical_id] = dict(attrs)
        if self._account_id is None:
            self._account_id = _account_from_arn(attrs.get("Arn", ""))

    def account_id(self) -> str:
        if self._account_id is None:
            raise ProvisionError(
                "AWS::AccountId is needed before any queue or table reported an ARN; "
                "pass account_id"
            )
        return self._account_id

    def pseudo(self, name: str) -> Any:
        values: dict[str, Callable[[], Any]] = {
            "AWS::StackName": lambda: self.stack_name,
            "AWS::Region": lambda: self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": lambda: "aws",
            "AWS::URLSuffix": lambda: "amazonaws.com",
            "AWS::NoValue": lambda: _NO_VALUE,
        }
        if name not in values:
            raise ProvisionError(f"unsupported pseudo parameter {name}")
        return values[name]()

    def ref(self, name: str, where: str) -> Any:
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.template.get("Parameters", {}):
            raise ProvisionError(f"{where}: parameter {name} has no default; pass it in overrides")
        if name in self.refs:
            return self.refs[name]
        raise ProvisionError(f"{where}: cannot resolve Ref {name} (not provisioned locally)")

    def get_att(self, logical_id: str, attribute: str, where: str) -> str:
        try:
            return self.attrs[logical_id][attribute]
        except KeyError:
            raise ProvisionError(
                f"{where}: cannot resolve GetAtt {logical_id}.{attribute}"
            ) from None

    def resolve(self, value: Any, *, where: str) -> Any:
        """`value` with every intrinsic replaced by its value; AWS::NoValue entries dropped."""
        if isinstance(value, list):
            items = [self.resolve(item, where=where) for item in value]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(str(arg), where)
            if key.startswith("Fn::"):
                return self._function(key, arg, where)
        resolved = {key: self.resolve(item, where=where) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not _NO_VALUE}

    def _function(self, name: str, arg: Any, where: str) -> Any:
        if name == "Fn::GetAtt":
            logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            return self.get_att(str(logical_id), str(self.resolve(attribute, where=where)), where)
        if name == "Fn::Sub":
            if isinstance(arg, str):
                return self._sub(arg, {}, where)
            text, variables = arg
            return self._sub(text, self.resolve(variables, where=where), where)
        if name == "Fn::Join":
            separator, items = arg
            return str(separator).join(str(item) for item in self.resolve(items, where=where))
        if name == "Fn::Select":
            index, items = self.resolve(arg, where=where)
            return items[int(index)]
        if name == "Fn::Split":
            separator, text = self.resolve(arg, where=where)
            return str(text).split(str(separator))
        raise ProvisionError(f"{where}: unsupported intrinsic {name}")

    def _sub(self, text: str, variables: Mapping[str, Any], where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute, where)
            return str(self.ref(name, where))

        return _SUB_VARIABLE.sub(replace, text)


def _account_from_arn(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 5 and parts[0] == "arn" and parts[4] else None


def _references(value: Any) -> set[str]:
    """Logical ids and parameter names `value` refers to through Ref, GetAtt or Sub."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str):
                return {arg}
            if key == "Fn::GetAtt":
                target = arg.split(".", 1)[0] if isinstance(arg, str) else arg[0]
                return {str(target)}
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                names = {m.split(".", 1)[0] for m in _SUB_VARIABLE.findall(text)}
                return (names - set(variables)) | _references(variables)
        for item in value.values():
            found |= _references(item)
    return found


def creation_order(template: Mapping[str, Any]) -> list[str]:
    """Provisionable resources, each after those it refers to (DependsOn included)."""
    resources: Mapping[str, Mapping[str, Any]] = template.get("Resources", {})
    wanted = {
        logical_id: resource
        for logical_id, resource in resources.items()
        if resource.get("Type") in PROVISIONED_TYPES
    }
    depends: dict[str, set[str]] = {}
    for logical_id, resource in wanted.items():
        explicit = resource.get("DependsOn", [])
        explicit = [explicit] if isinstance(explicit, str) else explicit
        depends[logical_id] = (_references(resource.get("Properties", {})) | set(explicit)) & set(
            wanted
        )

    def rank(logical_id: str) -> tuple[int, str]:
        return PROVISIONED_TYPES.index(wanted[logical_id]["Type"]), logical_id

    order: list[str] = []
    pending = dict(depends)
    while pending:
        ready = sorted((lid for lid, deps in pending.items() if deps <= set(order)), key=rank)
        if not ready:
            raise ProvisionError(f"circular references among {sorted(pending)}")
        order.append(ready[0])
        del pending[ready[0]]
    return order
