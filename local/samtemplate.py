"""Read a SAM/CloudFormation template and resolve it for the local stack.

Shared by local/stack.py (creates the template's resources in moto) and local/pump.py (drives the
non-HTTP triggers). Stdlib + PyYAML only; nothing here talks to the network.

- `load_template(path)` parses YAML with CloudFormation short tags (!Ref, !Sub, !GetAtt, !If, ...),
  turning each into its long form ({"Ref": ...}, {"Fn::Sub": ...}), so both spellings resolve alike.
- `Template(...)` knows the local physical name of every supported resource (S3 bucket, DynamoDB
  table, SQS queue, EventBridge bus, function) and resolves the simple intrinsics to local values:
  names, ARNs and moto queue URLs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

DEFAULT_STACK_NAME = "portal-local"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "000000000000"
DEFAULT_ENDPOINT = "http://127.0.0.1:5000"

BUCKET = "AWS::S3::Bucket"
TABLE = "AWS::DynamoDB::Table"
SIMPLE_TABLE = "AWS::Serverless::SimpleTable"
QUEUE = "AWS::SQS::Queue"
BUS = "AWS::Events::EventBus"
RULE = "AWS::Events::Rule"
FUNCTION = "AWS::Serverless::Function"
LAMBDA_FUNCTION = "AWS::Lambda::Function"

# Resource types whose local physical name the stack knows (and, except functions, creates).
NAMED_TYPES = (BUCKET, TABLE, SIMPLE_TABLE, QUEUE, BUS, FUNCTION, LAMBDA_FUNCTION)
NAME_PROPERTY = {
    BUCKET: "BucketName",
    TABLE: "TableName",
    SIMPLE_TABLE: "TableName",
    QUEUE: "QueueName",
    BUS: "Name",
    FUNCTION: "FunctionName",
    LAMBDA_FUNCTION: "FunctionName",
}


class Unresolvable(Exception):
    """An intrinsic the local stack cannot evaluate (ImportValue, an unknown attribute, ...)."""


class _NoValue:
    """AWS::NoValue: the enclosing key is dropped."""

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "NoValue"


NO_VALUE = _NoValue()


# --------------------------------------------------------------------------------------------
# YAML with CloudFormation short tags
# --------------------------------------------------------------------------------------------

class CfnLoader(yaml.SafeLoader):
    """A SafeLoader that accepts CloudFormation short-form intrinsic tags."""


def _construct_node(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value = _construct_node(loader, node)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        logical, _, attr = value.partition(".")
        return {"Fn::GetAtt": [logical, attr]}
    return {"Fn::" + suffix: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)

# YAML 1.2 booleans only: PyYAML's YAML 1.1 rules would turn names such as `On`, `Off`, `Yes` or
# `No` (an event called `Off`, say) into booleans.
CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
CfnLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=CfnLoader)  # noqa: S506 - CfnLoader is a SafeLoader


def load_template(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        doc = load_yaml(f.read())
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a CloudFormation template (top level is not a mapping)")
    return doc


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------

def sanitize_name(name: str, max_len: int, allowed: str = r"A-Za-z0-9_-") -> str:
    """Make `name` a valid queue/rule name: replace invalid characters, shorten with a hash."""
    clean = re.sub(f"[^{allowed}]", "-", name)
    if len(clean) <= max_len:
        return clean
    import hashlib

    digest = hashlib.sha1(clean.encode()).hexdigest()[:8]
    return clean[: max_len - 9] + "-" + digest


@dataclass
class Template:
    doc: dict
    stack_name: str = DEFAULT_STACK_NAME
    region: str = DEFAULT_REGION
    account: str = DEFAULT_ACCOUNT
    endpoint: str = DEFAULT_ENDPOINT
    parameters: dict = field(default_factory=dict)
    # Overrides learned from the running endpoint (e.g. the real QueueUrl moto returned).
    queue_urls: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.resources: dict = self.doc.get("Resources") or {}
        self.globals: dict = self.doc.get("Globals") or {}
        self._names: dict[str, str] = {}
        self._conditions: dict[str, bool] = {}

    @classmethod
    def from_file(cls, path: str, **kw: Any) -> "Template":
        return cls(load_template(path), **kw)

    # -- parameters and conditions -----------------------------------------------------------

    def parameter(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        spec = (self.doc.get("Parameters") or {}).get(name)
        if spec is None:
            raise Unresolvable(f"unknown parameter or resource {name!r}")
        if "Default" not in spec:
            raise Unresolvable(f"parameter {name!r} has no Default (pass it as an override)")
        default = spec["Default"]
        if spec.get("Type") == "CommaDelimitedList" and isinstance(default, str):
            return [s.strip() for s in default.split(",")]
        return default

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            spec = (self.doc.get("Conditions") or {}).get(name)
            if spec is None:
                raise Unresolvable(f"unknown condition {name!r}")
            self._conditions[name] = bool(self._eval_condition(spec))
        return self._conditions[name]

    def _eval_condition(self, spec: Any) -> Any:
        if isinstance(spec, dict) and len(spec) == 1:
            (key, arg), = spec.items()
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self._eval_condition(arg[0])
            if key == "Fn::And":
                return all(self._eval_condition(x) for x in arg)
            if key == "Fn::Or":
                return any(self._eval_condition(x) for x in arg)
        return self.resolve(spec)

    # -- resources ---------------------------------------------------------------------------

    def resource_type(self, logical_id: str) -> str | None:
        res = self.resources.get(logical_id)
        return res.get("Type") if isinstance(res, dict) else None

    def properties(self, logical_id: str) -> dict:
        res = self.resources.get(logical_id) or {}
        return res.get("Properties") or {}

    def resources_of(self, *types: str) -> list[str]:
        out = []
        for logical_id, res in self.resources.items():
            if not isinstance(res, dict) or res.get("Type") not in types:
                continue
            if "Condition" in res:
                try:
                    if not self.condition(res["Condition"]):
                        continue
                except Unresolvable:
                    pass
            out.append(logical_id)
        return out

    def physical_name(self, logical_id: str) -> str:
        """Local physical name: the name property resolved, else the logical id lowercased."""
        if logical_id in self._names:
            return self._names[logical_id]
        rtype = self.resource_type(logical_id)
        if rtype not in NAMED_TYPES:
            raise Unresolvable(f"{logical_id}: no local name for type {rtype}")
        props = self.properties(logical_id)
        prop = NAME_PROPERTY[rtype]
        name = None
        if props.get(prop) is not None:
            value = self.resolve(props[prop])
            if value is not NO_VALUE and value is not None:
                name = str(value)
        if name is None:
            name = logical_id.lower()
            if rtype == QUEUE and _truthy(props.get("FifoQueue")):
                name += ".fifo"
        self._names[logical_id] = name
        return name

    def queue_url(self, logical_id: str) -> str:
        name = self.physical_name(logical_id)
        return self.queue_urls.get(name) or f"{self.endpoint.rstrip('/')}/{self.account}/{name}"

    def arn(self, logical_id: str) -> str:
        rtype = self.resource_type(logical_id)
        name = self.physical_name(logical_id)
        r, a = self.region, self.account
        if rtype == BUCKET:
            return f"arn:aws:s3:::{name}"
        if rtype in (TABLE, SIMPLE_TABLE):
            return f"arn:aws:dynamodb:{r}:{a}:table/{name}"
        if rtype == QUEUE:
            return f"arn:aws:sqs:{r}:{a}:{name}"
        if rtype == BUS:
            return f"arn:aws:events:{r}:{a}:event-bus/{name}"
        if rtype in (FUNCTION, LAMBDA_FUNCTION):
            return f"arn:aws:lambda:{r}:{a}:function:{name}"
        raise Unresolvable(f"{logical_id}: no ARN for type {rtype}")

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account}:stack/{self.stack_name}/local",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.resources:
            rtype = self.resource_type(name)
            if rtype == QUEUE:
                return self.queue_url(name)
            if rtype in NAMED_TYPES:
                return self.physical_name(name)
            if rtype == RULE:
                return self.rule_name(name)
            raise Unresolvable(f"Ref {name}: type {rtype} is not modelled locally")
        return self.parameter(name)

    def rule_name(self, logical_id: str) -> str:
        props = self.properties(logical_id)
        if props.get("Name") is not None:
            return str(self.resolve(props["Name"]))
        return sanitize_name(f"{self.stack_name}-{logical_id}", 64, r"A-Za-z0-9._-")

    def get_att(self, logical_id: str, attr: str) -> Any:
        rtype = self.resource_type(logical_id)
        if rtype is None:
            raise Unresolvable(f"GetAtt {logical_id}.{attr}: no such resource")
        if attr == "Arn":
            return self.arn(logical_id)
        name = self.physical_name(logical_id)
        if rtype == QUEUE and attr == "QueueName":
            return name
        if rtype == QUEUE and attr == "QueueUrl":
            return self.queue_url(logical_id)
        if rtype == BUS and attr == "Name":
            return name
        if rtype == BUCKET and attr in ("DomainName", "RegionalDomainName"):
            return f"{name}.s3.amazonaws.com" if attr == "DomainName" else f"{name}.s3.{self.region}.amazonaws.com"
        if rtype in (TABLE, SIMPLE_TABLE) and attr == "StreamArn":
            return f"{self.arn(logical_id)}/stream/local"
        raise Unresolvable(f"GetAtt {logical_id}.{attr} is not modelled locally")

    def references_resource(self, value: Any) -> bool:
        """True if the expression refers (Ref/GetAtt/Sub) to a resource declared in the template."""
        if isinstance(value, dict):
            if "Ref" in value and len(value) == 1:
                return value["Ref"] in self.resources
            if "Fn::GetAtt" in value and len(value) == 1:
                arg = value["Fn::GetAtt"]
                if isinstance(arg, str):
                    arg = arg.split(".", 1)
                return bool(arg) and arg[0] in self.resources
            if "Fn::Sub" in value and len(value) == 1:
                arg = value["Fn::Sub"]
                text = arg[0] if isinstance(arg, list) else arg
                for var in re.findall(r"\$\{([^!}][^}]*)\}", str(text)):
                    if var.split(".", 1)[0] in self.resources:
                        return True
                return isinstance(arg, list) and len(arg) > 1 and self.references_resource(arg[1])
            return any(self.references_resource(v) for v in value.values())
        if isinstance(value, list):
            return any(self.references_resource(v) for v in value)
        return False

    def spells_resource_name(self, value: Any) -> bool:
        """True if the expression, without naming a resource, resolves to the physical name of one
        (a bucket named with !Sub from pseudo parameters, spelled out to avoid a dependency cycle)."""
        if not isinstance(value, dict):
            return False
        try:
            resolved = self.resolve(value)
        except (Unresolvable, KeyError, IndexError, TypeError, ValueError):
            return False
        for logical_id in self.resources:
            if self.resource_type(logical_id) not in NAMED_TYPES:
                continue
            try:
                if self.physical_name(logical_id) == resolved:
                    return True
            except (Unresolvable, KeyError, IndexError, TypeError, ValueError):
                continue
        return False

    # -- intrinsics --------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Evaluate intrinsics in `value` (recursively). Raises Unresolvable when it cannot."""
        if isinstance(value, list):
            return [v for v in (self.resolve(x) for x in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                if isinstance(arg, str):
                    arg = arg.split(".", 1)
                logical, attr = arg[0], self.resolve(arg[1])
                return self.get_att(logical, attr)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                delim, items = arg
                return str(delim).join(str(x) for x in self.resolve(items))
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no)
            if key == "Fn::Select":
                index, items = arg
                items = self.resolve(items)
                return items[int(self.resolve(index))]
            if key == "Fn::Split":
                delim, text = arg
                return str(self.resolve(text)).split(delim)
            if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
                return self._eval_condition(value)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key == "Fn::ToJsonString":
                return json.dumps(self.resolve(arg), separators=(",", ":"))
            if key == "Fn::FindInMap":
                map_name, top, second = (self.resolve(x) for x in arg)
                try:
                    return self.resolve(self.doc["Mappings"][map_name][top][second])
                except KeyError as e:
                    raise Unresolvable(f"FindInMap {map_name}/{top}/{second}") from e
            if key.startswith("Fn::"):
                raise Unresolvable(f"{key} is not evaluated locally")
        out = {}
        for k, v in value.items():
            r = self.resolve(v)
            if r is not NO_VALUE:
                out[k] = r
        return out

    def try_resolve(self, value: Any, default: Any = None) -> Any:
        try:
            return self.resolve(value)
        except (Unresolvable, KeyError, IndexError, TypeError, ValueError):
            return default

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], arg[1] if len(arg) > 1 else {}
        else:
            text, variables = arg, {}
        local_vars = {k: self.resolve(v) for k, v in (variables or {}).items()}

        def repl(m: re.Match) -> str:
            var = m.group(1)
            if var.startswith("!"):
                return "${" + var[1:] + "}"
            if var in local_vars:
                return str(local_vars[var])
            if "." in var and not var.startswith("AWS::"):
                logical, attr = var.split(".", 1)
                return str(self.get_att(logical, attr))
            value = self.ref(var)
            if value is NO_VALUE:
                return ""
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", repl, str(text))

    # -- functions ---------------------------------------------------------------------------

    def functions(self) -> list[str]:
        return self.resources_of(FUNCTION)

    def function_binary(self, logical_id: str) -> str:
        res = self.resources.get(logical_id) or {}
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if binary:
            return str(self.try_resolve(binary, binary))
        code_uri = self.properties(logical_id).get("CodeUri")
        if code_uri is None:
            code_uri = (self.globals.get("Function") or {}).get("CodeUri")
        code_uri = self.try_resolve(code_uri, None)
        if isinstance(code_uri, str) and code_uri.strip("/"):
            return os.path.basename(code_uri.rstrip("/"))
        return logical_id.lower()

    def function_environment(self, logical_id: str) -> dict:
        """Raw (unresolved) Environment.Variables: Globals merged with the function's own."""
        merged = dict(((self.globals.get("Function") or {}).get("Environment") or {}).get("Variables") or {})
        merged.update(((self.properties(logical_id).get("Environment") or {}).get("Variables")) or {})
        return merged

    def resource_env(self) -> tuple[dict, list[str]]:
        """Env vars that functions take from declared resources, resolved to local values.

        Reads Globals.Function.Environment.Variables and every function's own variables; keeps
        those whose value refers to a declared resource. Returns (vars, warnings).
        """
        env: dict[str, str] = {}
        warnings: list[str] = []
        sources = [("Globals", ((self.globals.get("Function") or {}).get("Environment") or {}).get("Variables") or {})]
        for fn in self.functions():
            sources.append((fn, ((self.properties(fn).get("Environment") or {}).get("Variables")) or {}))
        for origin, variables in sources:
            for key, raw in variables.items():
                if not self.references_resource(raw) and not self.spells_resource_name(raw):
                    continue
                try:
                    value = self.resolve(raw)
                except (Unresolvable, KeyError, IndexError, TypeError, ValueError) as e:
                    warnings.append(f"{origin}: {key} not resolved locally ({e})")
                    continue
                if value is NO_VALUE:
                    continue
                value = str(value)
                if key in env and env[key] != value:
                    warnings.append(f"{origin}: {key}={value} conflicts with {env[key]} (kept the first)")
                    continue
                env[key] = value
        return env, warnings


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def parse_parameter_overrides(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        for part in item.split():
            if "=" not in part:
                raise ValueError(f"parameter override {part!r} is not KEY=VALUE")
            k, v = part.split("=", 1)
            out[k] = v
    return out


def aws_client(service: str, endpoint: str = DEFAULT_ENDPOINT, region: str = DEFAULT_REGION):
    """A boto3 client for the local endpoint (credentials test/test unless the env says otherwise)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


def endpoint_account(endpoint: str = DEFAULT_ENDPOINT, region: str = DEFAULT_REGION) -> str:
    """The account id the endpoint uses in its ARNs (moto: 123456789012 unless MOTO_ACCOUNT_ID)."""
    try:
        return aws_client("sts", endpoint, region).get_caller_identity()["Account"]
    except Exception:  # noqa: BLE001 - any failure means "use the default"
        return DEFAULT_ACCOUNT
