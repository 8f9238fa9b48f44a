#!/usr/bin/env python3
"""Create (or delete) template.yaml's AWS resources in the local endpoint (moto).

    python3 local/stack.py resources [--template template.yaml] [--env-out FILE]
    python3 local/stack.py env        # print the functions' resource env vars (KEY=VALUE)
    python3 local/stack.py describe   # print the resolved local resources as JSON
    python3 local/stack.py delete     # delete them again (buckets are emptied first)

Handles every AWS::S3::Bucket, AWS::DynamoDB::Table (and Serverless::SimpleTable),
AWS::SQS::Queue (RedrivePolicy included) and AWS::Events::EventBus declared in the template, plus
AWS::Events::Rule resources with an EventPattern whose targets are SQS queues or buses. Physical
names come from the name properties (e.g. !Sub "${AWS::StackName}-media" with the stack name
portal-local), else the logical id lowercased. Idempotent: an existing resource is updated in
place where that is cheap (queue attributes, TTL, CORS) and otherwise left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samtemplate as st  # noqa: E402
from samtemplate import Template  # noqa: E402

SQS_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)


def _err_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def _s(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def resolve_props(tpl: Template, logical_id: str, required: tuple[str, ...] = ()) -> dict:
    """Resolve a resource's properties one by one: a property the local stack cannot evaluate
    (a KMS key, a Lambda notification...) is left out unless it is required, then it raises."""
    out = {}
    for key, raw in tpl.properties(logical_id).items():
        if key in required:
            value = tpl.resolve(raw)
        else:
            value = tpl.try_resolve(raw, st.NO_VALUE)
        if value is not st.NO_VALUE:
            out[key] = value
    return out


class LocalStack:
    """Applies a resolved Template to the endpoint."""

    def __init__(self, tpl: Template, endpoint: str, region: str, log=print):
        self.tpl = tpl
        self.endpoint = endpoint
        self.region = region
        self.log = log
        self._clients: dict[str, Any] = {}

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = st.aws_client(service, self.endpoint, self.region)
        return self._clients[service]

    # -- S3 ------------------------------------------------------------------------------------

    def ensure_bucket(self, name: str, props: dict | None = None) -> bool:
        s3 = self.client("s3")
        created = False
        try:
            s3.head_bucket(Bucket=name)
        except Exception:  # noqa: BLE001 - 404 / 403 both mean: try to create it
            kwargs: dict[str, Any] = {"Bucket": name}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                s3.create_bucket(**kwargs)
                created = True
            except Exception as e:  # noqa: BLE001
                if _err_code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        props = props or {}
        versioning = props.get("VersioningConfiguration")
        if isinstance(versioning, dict) and versioning.get("Status"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        cors = (props.get("CorsConfiguration") or {}).get("CorsRules")
        if cors:
            rules = []
            for rule in cors:
                r = {
                    "AllowedMethods": rule.get("AllowedMethods") or ["GET"],
                    "AllowedOrigins": rule.get("AllowedOrigins") or ["*"],
                }
                if rule.get("AllowedHeaders"):
                    r["AllowedHeaders"] = rule["AllowedHeaders"]
                if rule.get("ExposedHeaders"):
                    r["ExposeHeaders"] = rule["ExposedHeaders"]
                if rule.get("MaxAge") is not None:
                    r["MaxAgeSeconds"] = int(rule["MaxAge"])
                if rule.get("Id"):
                    r["ID"] = rule["Id"]
                rules.append(r)
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": rules})
        return created

    def open_reads(self, name: str, prefixes: list[str]) -> None:
        """Anonymous GetObject on `prefixes` of bucket `name`: what its CDN serves in the cloud."""
        statements = [{"Sid": f"LocalCdnReads{i}", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{name}/{prefix}"} for i, prefix in enumerate(prefixes)]
        self.client("s3").put_bucket_policy(
            Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))

    def delete_bucket(self, name: str) -> None:
        s3 = self.client("s3")
        try:
            paginator = s3.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=name):
                objs = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                        for o in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])]
                if objs:
                    s3.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
            s3.delete_bucket(Bucket=name)
        except Exception as e:  # noqa: BLE001
            if _err_code(e) not in ("NoSuchBucket", "404"):
                raise

    # -- DynamoDB ------------------------------------------------------------------------------

    def ensure_table(self, logical_id: str) -> bool:
        tpl = self.tpl
        ddb = self.client("dynamodb")
        name = tpl.physical_name(logical_id)
        props = resolve_props(tpl, logical_id, required=("KeySchema", "AttributeDefinitions")
                              if tpl.resource_type(logical_id) == st.TABLE else ())
        if tpl.resource_type(logical_id) == st.SIMPLE_TABLE:
            pk = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
            kind = {"String": "S", "Number": "N", "Binary": "B"}.get(pk.get("Type", "String"), "S")
            kwargs: dict[str, Any] = {
                "TableName": name,
                "KeySchema": [{"AttributeName": pk["Name"], "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": pk["Name"], "AttributeType": kind}],
                "BillingMode": "PAY_PER_REQUEST",
            }
            ttl = None
        else:
            kwargs = {
                "TableName": name,
                "KeySchema": props["KeySchema"],
                "AttributeDefinitions": props["AttributeDefinitions"],
            }
            throughput = props.get("ProvisionedThroughput")
            mode = props.get("BillingMode") or ("PROVISIONED" if throughput else "PAY_PER_REQUEST")
            kwargs["BillingMode"] = mode

            def pt(value: dict | None) -> dict:
                value = value or {}
                return {
                    "ReadCapacityUnits": int(value.get("ReadCapacityUnits", 5)),
                    "WriteCapacityUnits": int(value.get("WriteCapacityUnits", 5)),
                }

            if mode == "PROVISIONED":
                kwargs["ProvisionedThroughput"] = pt(throughput)
            gsis = []
            for gsi in props.get("GlobalSecondaryIndexes") or []:
                g = {"IndexName": gsi["IndexName"], "KeySchema": gsi["KeySchema"],
                     "Projection": gsi.get("Projection") or {"ProjectionType": "ALL"}}
                if mode == "PROVISIONED":
                    g["ProvisionedThroughput"] = pt(gsi.get("ProvisionedThroughput"))
                gsis.append(g)
            if gsis:
                kwargs["GlobalSecondaryIndexes"] = gsis
            lsis = [{"IndexName": i["IndexName"], "KeySchema": i["KeySchema"],
                     "Projection": i.get("Projection") or {"ProjectionType": "ALL"}}
                    for i in props.get("LocalSecondaryIndexes") or []]
            if lsis:
                kwargs["LocalSecondaryIndexes"] = lsis
            stream = props.get("StreamSpecification")
            if isinstance(stream, dict) and stream.get("StreamViewType"):
                kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
            ttl = props.get("TimeToLiveSpecification")
        created = False
        try:
            ddb.create_table(**kwargs)
            created = True
        except Exception as e:  # noqa: BLE001
            if _err_code(e) != "ResourceInUseException":
                raise
        if isinstance(ttl, dict) and st._truthy(ttl.get("Enabled", False)) and ttl.get("AttributeName"):
            current = ddb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or \
                    current.get("AttributeName") != ttl["AttributeName"]:
                ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
        return created

    def delete_table(self, name: str) -> None:
        try:
            self.client("dynamodb").delete_table(TableName=name)
        except Exception as e:  # noqa: BLE001
            if _err_code(e) != "ResourceNotFoundException":
                raise

    # -- SQS -----------------------------------------------------------------------------------

    def queue_attributes(self, logical_id: str) -> dict[str, str]:
        props = resolve_props(self.tpl, logical_id, required=("RedrivePolicy",))
        attrs = {k: _s(props[k]) for k in SQS_ATTRIBUTES if props.get(k) is not None}
        if st._truthy(props.get("FifoQueue")):
            attrs["FifoQueue"] = "true"
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if props.get(key) is not None:
                value = props[key]
                attrs[key] = value if isinstance(value, str) else json.dumps(value)
        return attrs

    def ensure_queue(self, name: str, attributes: dict[str, str] | None = None) -> tuple[str, bool]:
        """Create the queue (or update its attributes); returns (url, created)."""
        sqs = self.client("sqs")
        attributes = dict(attributes or {})
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except Exception as e:  # noqa: BLE001
            if "NonExistentQueue" not in _err_code(e) and "QueueDoesNotExist" not in _err_code(e):
                raise
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            return url, True
        attributes.pop("FifoQueue", None)
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url, False

    def queue_arn(self, url: str) -> str:
        attrs = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return attrs["Attributes"]["QueueArn"]

    def delete_queue(self, name: str) -> None:
        sqs = self.client("sqs")
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            sqs.delete_queue(QueueUrl=url)
        except Exception as e:  # noqa: BLE001
            if "NonExistentQueue" not in _err_code(e) and "QueueDoesNotExist" not in _err_code(e):
                raise

    # -- EventBridge ---------------------------------------------------------------------------

    def ensure_bus(self, name: str) -> bool:
        if not name or name == "default":
            return False
        try:
            self.client("events").create_event_bus(Name=name)
            return True
        except Exception as e:  # noqa: BLE001
            if _err_code(e) != "ResourceAlreadyExistsException":
                raise
            return False

    def delete_bus(self, name: str) -> None:
        events = self.client("events")
        try:
            for rule in events.list_rules(EventBusName=name).get("Rules", []):
                self.delete_rule(rule["Name"], name)
            events.delete_event_bus(Name=name)
        except Exception as e:  # noqa: BLE001
            if _err_code(e) != "ResourceNotFoundException":
                raise

    def put_rule(self, name: str, bus: str, pattern: Any, targets: list[dict], state: str = "ENABLED") -> str:
        events = self.client("events")
        pattern_json = pattern if isinstance(pattern, str) else json.dumps(pattern)
        arn = events.put_rule(Name=name, EventBusName=bus or "default", EventPattern=pattern_json,
                              State=state)["RuleArn"]
        events.put_targets(Rule=name, EventBusName=bus or "default", Targets=targets)
        return arn

    def delete_rule(self, name: str, bus: str) -> None:
        events = self.client("events")
        try:
            ids = [t["Id"] for t in events.list_targets_by_rule(Rule=name, EventBusName=bus).get("Targets", [])]
            if ids:
                events.remove_targets(Rule=name, EventBusName=bus, Ids=ids)
            events.delete_rule(Name=name, EventBusName=bus)
        except Exception as e:  # noqa: BLE001
            if _err_code(e) != "ResourceNotFoundException":
                raise

    # -- the whole template --------------------------------------------------------------------

    def apply(self) -> list[tuple[str, str, str, str]]:
        """Create every supported resource; returns rows (logical id, type, physical name, status)."""
        tpl = self.tpl
        rows = []
        for lid in tpl.resources_of(st.BUCKET):
            name = tpl.physical_name(lid)
            created = self.ensure_bucket(name, resolve_props(tpl, lid))
            rows.append((lid, "s3 bucket", name, "created" if created else "exists"))
        for bucket, prefixes in cdn_reads(tpl).items():
            self.open_reads(bucket, prefixes)
            rows.append((bucket, "s3 reads", f"{bucket}/{','.join(prefixes)}", "public (as its CDN)"))
        for lid in tpl.resources_of(st.TABLE, st.SIMPLE_TABLE):
            name = tpl.physical_name(lid)
            created = self.ensure_table(lid)
            rows.append((lid, "dynamodb table", name, "created" if created else "exists"))
        # Queues in two passes: create all (without redrive), then set the redrive policies,
        # so a DLQ declared after its source queue is never missing.
        queues = tpl.resources_of(st.QUEUE)
        pending = {}
        for lid in queues:
            name = tpl.physical_name(lid)
            attrs = self.queue_attributes(lid)
            later = {k: attrs.pop(k) for k in ("RedrivePolicy", "RedriveAllowPolicy") if k in attrs}
            url, created = self.ensure_queue(name, attrs)
            tpl.queue_urls[name] = url
            pending[lid] = (url, later)
            rows.append((lid, "sqs queue", name, "created" if created else "exists"))
        for lid, (url, later) in pending.items():
            if later:
                self.client("sqs").set_queue_attributes(QueueUrl=url, Attributes=later)
        for lid in tpl.resources_of(st.BUS):
            name = tpl.physical_name(lid)
            created = self.ensure_bus(name)
            rows.append((lid, "event bus", name, "created" if created else "exists"))
        for lid in tpl.resources_of(st.RULE):
            row = self._apply_rule(lid)
            if row:
                rows.append(row)
        return rows

    def _apply_rule(self, lid: str):
        tpl = self.tpl
        props = tpl.try_resolve(tpl.properties(lid))
        if not props or not props.get("EventPattern") or props.get("State") == "DISABLED":
            return None
        targets = []
        for t in props.get("Targets") or []:
            arn = str(t.get("Arn", ""))
            if arn.startswith("arn:aws:sqs:") or arn.startswith("arn:aws:events:"):
                target = {"Id": str(t.get("Id", "target"))[:64], "Arn": arn}
                for key in ("Input", "InputPath"):
                    if t.get(key) is not None:
                        target[key] = t[key] if isinstance(t[key], str) else json.dumps(t[key])
                targets.append(target)
        if not targets:
            return (lid, "event rule", tpl.rule_name(lid), "skipped (no SQS/bus target; the pump drives functions)")
        bus = str(props.get("EventBusName") or "default").split("/")[-1]
        self.ensure_bus(bus)
        self.put_rule(tpl.rule_name(lid), bus, props["EventPattern"], targets)
        return (lid, "event rule", tpl.rule_name(lid), "applied")

    def destroy(self) -> list[tuple[str, str, str, str]]:
        tpl = self.tpl
        rows = []
        for lid in tpl.resources_of(st.RULE):
            props = tpl.try_resolve(tpl.properties(lid)) or {}
            bus = str(props.get("EventBusName") or "default").split("/")[-1]
            self.delete_rule(tpl.rule_name(lid), bus)
            rows.append((lid, "event rule", tpl.rule_name(lid), "deleted"))
        for lid in tpl.resources_of(st.BUS):
            self.delete_bus(tpl.physical_name(lid))
            rows.append((lid, "event bus", tpl.physical_name(lid), "deleted"))
        for lid in tpl.resources_of(st.QUEUE):
            self.delete_queue(tpl.physical_name(lid))
            rows.append((lid, "sqs queue", tpl.physical_name(lid), "deleted"))
        for lid in tpl.resources_of(st.TABLE, st.SIMPLE_TABLE):
            self.delete_table(tpl.physical_name(lid))
            rows.append((lid, "dynamodb table", tpl.physical_name(lid), "deleted"))
        for lid in tpl.resources_of(st.BUCKET):
            self.delete_bucket(tpl.physical_name(lid))
            rows.append((lid, "s3 bucket", tpl.physical_name(lid), "deleted"))
        return rows


def cdn_reads(tpl: Template) -> dict[str, list[str]]:
    """Buckets whose policy lets CloudFront read objects (origin access control): bucket name ->
    the object patterns it reads (`media/*`). Locally there is no CDN, so the local stack lets
    anyone read those objects from the moto server, as sites read them through the CDN."""
    out: dict[str, list[str]] = {}
    for lid in tpl.resources_of("AWS::S3::BucketPolicy"):
        props = tpl.properties(lid)
        try:
            bucket = str(tpl.resolve(props.get("Bucket")))
        except (st.Unresolvable, KeyError, TypeError, ValueError):
            continue
        for statement in ((props.get("PolicyDocument") or {}).get("Statement")) or []:
            principal = statement.get("Principal") or {}
            service = principal.get("Service") if isinstance(principal, dict) else None
            actions = statement.get("Action")
            actions = [actions] if isinstance(actions, str) else list(actions or [])
            if statement.get("Effect") != "Allow" or service != "cloudfront.amazonaws.com" \
                    or "s3:GetObject" not in actions:
                continue
            resources = statement.get("Resource")
            for resource in [resources] if not isinstance(resources, list) else resources:
                try:
                    arn = str(tpl.resolve(resource))
                except (st.Unresolvable, KeyError, TypeError, ValueError):
                    continue
                prefix = arn.split(":::", 1)[-1].split("/", 1)
                if len(prefix) == 2 and prefix[0] == bucket:
                    out.setdefault(bucket, []).append(prefix[1])
    return out


def build_template(args: argparse.Namespace, query_account: bool = True) -> Template | None:
    if not os.path.exists(args.template):
        return None
    account = st.endpoint_account(args.endpoint, args.region) if query_account else st.DEFAULT_ACCOUNT
    return Template.from_file(
        args.template,
        stack_name=args.stack_name,
        region=args.region,
        account=account,
        endpoint=args.endpoint,
        parameters=st.parse_parameter_overrides(args.parameter_overrides),
    )


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--template", default="template.yaml", help="SAM template (default: template.yaml)")
    p.add_argument("--stack-name", default=os.environ.get("LOCAL_STACK_NAME", st.DEFAULT_STACK_NAME))
    p.add_argument("--endpoint", default=st.DEFAULT_ENDPOINT, help="AWS endpoint (moto server)")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", st.DEFAULT_REGION))
    p.add_argument("--parameter-overrides", action="append", metavar="KEY=VALUE",
                   help="template parameter values (repeatable; space-separated pairs allowed)")


def write_env(path: str, env: dict[str, str]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for k, v in env.items():
            f.write(f"{k}={v}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_res = sub.add_parser("resources", help="create the template's resources in the endpoint")
    add_common_args(p_res)
    p_res.add_argument("--env-out", help="write the functions' resource env vars (KEY=VALUE) here")
    p_env = sub.add_parser("env", help="print the functions' resource env vars (KEY=VALUE)")
    add_common_args(p_env)
    p_desc = sub.add_parser("describe", help="print the resolved local resources as JSON")
    add_common_args(p_desc)
    p_del = sub.add_parser("delete", help="delete the template's resources from the endpoint")
    add_common_args(p_del)
    args = parser.parse_args(argv)

    tpl = build_template(args, query_account=args.command != "describe")
    if tpl is None:
        print(f"stack: {args.template} not found; no AWS resources to create", file=sys.stderr)
        if getattr(args, "env_out", None):
            write_env(args.env_out, {})
        return 0

    if args.command == "describe":
        out = []
        for lid in tpl.resources_of(*st.NAMED_TYPES):
            item = {"logicalId": lid, "type": tpl.resource_type(lid), "name": tpl.physical_name(lid)}
            item["arn"] = tpl.try_resolve({"Fn::GetAtt": [lid, "Arn"]})
            if tpl.resource_type(lid) == st.QUEUE:
                item["url"] = tpl.queue_url(lid)
            if tpl.resource_type(lid) == st.FUNCTION:
                item["binary"] = tpl.function_binary(lid)
            out.append(item)
        print(json.dumps(out, indent=2))
        return 0

    if args.command == "env":
        env, warnings = tpl.resource_env()
        for w in warnings:
            print(f"stack: warning: {w}", file=sys.stderr)
        for k, v in env.items():
            print(f"{k}={v}")
        return 0

    stack = LocalStack(tpl, args.endpoint, args.region)
    rows = stack.destroy() if args.command == "delete" else stack.apply()
    for lid, kind, name, status in rows:
        print(f"  {kind:<15} {name:<40} {status:<8} ({lid})")
    if not rows:
        print(f"stack: {args.template} declares no buckets, tables, queues or buses")
    if args.command == "resources":
        env, warnings = tpl.resource_env()
        for w in warnings:
            print(f"stack: warning: {w}", file=sys.stderr)
        if args.env_out:
            write_env(args.env_out, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
