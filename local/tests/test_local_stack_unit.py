"""Fast tests of the local stack's Python parts: no service needed.

Template parsing and name resolution (local/samtemplate.py), schedule and pattern parsing and the
event shapes of the pump (local/pump.py), the SQS batch bookkeeping with fakes, and the JWKS
writer (local/jwks.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

LOCAL = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(LOCAL)
sys.path.insert(0, LOCAL)

import jwks  # noqa: E402
import pump  # noqa: E402
import samtemplate as st  # noqa: E402
import stack  # noqa: E402

PUMP_TEMPLATE = os.path.join(LOCAL, "tests", "pump-template.yaml")
UTC = timezone.utc


def tpl_from(text: str, **kw) -> st.Template:
    return st.Template(st.load_yaml(text), **kw)


# ------------------------------------------------------------------------------------------------
# YAML loader and resolution
# ------------------------------------------------------------------------------------------------

def test_loader_turns_short_tags_into_long_form():
    doc = st.load_yaml(
        """
        A: !Ref Thing
        B: !Sub "${AWS::StackName}-x"
        C: !GetAtt Queue.Arn
        D: !If [Cond, !Ref X, !Ref AWS::NoValue]
        E: !Join ["-", [a, !Ref Y]]
        F: !GetAtt [Queue, QueueName]
        G: !Select [0, !Split [",", "a,b"]]
        """
    )
    assert doc["A"] == {"Ref": "Thing"}
    assert doc["B"] == {"Fn::Sub": "${AWS::StackName}-x"}
    assert doc["C"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert doc["D"] == {"Fn::If": ["Cond", {"Ref": "X"}, {"Ref": "AWS::NoValue"}]}
    assert doc["E"] == {"Fn::Join": ["-", ["a", {"Ref": "Y"}]]}
    assert doc["F"] == {"Fn::GetAtt": ["Queue", "QueueName"]}
    assert doc["G"] == {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}


def test_only_true_and_false_are_booleans():
    doc = st.load_yaml("{Off: x, On: y, a: yes, b: no, c: true, d: False, e: TRUE}")
    assert doc == {"Off": "x", "On": "y", "a": "yes", "b": "no", "c": True, "d": False, "e": True}
    assert yaml_safe_still_yaml11()


def yaml_safe_still_yaml11() -> bool:
    import yaml

    return yaml.safe_load("a: yes") == {"a": True}  # the global SafeLoader is left alone


def test_pump_template_names_resolve_from_the_stack_name():
    tpl = st.Template.from_file(PUMP_TEMPLATE, stack_name="pt-abc123", account="000000000000")
    assert tpl.physical_name("ProbeBucket") == "pt-abc123-uploads"
    assert tpl.physical_name("ProbeQueue") == "pt-abc123-work"
    assert tpl.physical_name("ProbeBus") == "pt-abc123-bus"
    assert tpl.resolve({"Fn::GetAtt": ["ProbeDeadLetterQueue", "Arn"]}) == \
        "arn:aws:sqs:us-east-1:000000000000:pt-abc123-work-dlq"
    assert tpl.resolve({"Ref": "ProbeQueue"}) == "http://127.0.0.1:5000/000000000000/pt-abc123-work"
    assert tpl.function_binary("PumpProbe") == "pump-probe"
    attrs = stack.LocalStack(tpl, st.DEFAULT_ENDPOINT, "us-east-1").queue_attributes("ProbeQueue")
    assert attrs["VisibilityTimeout"] == "2"
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:pt-abc123-work-dlq",
        "maxReceiveCount": 2,
    }
    env, warnings = tpl.resource_env()
    assert env == {
        "PROBE_QUEUE_URL": "http://127.0.0.1:5000/000000000000/pt-abc123-work",
        "PROBE_BUCKET": "pt-abc123-uploads",
        "PROBE_BUS_ARN": "arn:aws:events:us-east-1:000000000000:event-bus/pt-abc123-bus",
    }
    assert warnings == []


def test_names_fall_back_to_the_logical_id_and_intrinsics_resolve():
    tpl = tpl_from(
        """
        Parameters:
          Stage: {Type: String, Default: dev}
          Secret: {Type: String}
        Conditions:
          IsProd: !Equals [!Ref Stage, prod]
        Mappings:
          Sizes: {dev: {Memory: 128}}
        Globals:
          Function:
            CodeUri: functions/fallback
            Environment:
              Variables:
                MEDIA_BUCKET: !Ref MediaBucket
                STAGE: !Ref Stage
                SECRET: !Ref Secret
        Resources:
          MediaBucket:
            Type: AWS::S3::Bucket
            Properties:
              BucketName: !Sub "${AWS::StackName}-media-${Stage}"
          Jobs:
            Type: AWS::SQS::Queue
            Properties: {FifoQueue: true}
          Hooks:
            Type: AWS::DynamoDB::Table
            Properties:
              TableName: !If [IsProd, hooks-prod, !Join ["-", [!Ref "AWS::StackName", hooks]]]
              KeySchema: [{AttributeName: pk, KeyType: HASH}]
              AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
          Worker:
            Type: AWS::Serverless::Function
            Properties:
              Environment:
                Variables:
                  JOBS_URL: !Ref Jobs
                  JOBS_NAME: !GetAtt Jobs.QueueName
                  HOOKS: !Sub "table=${Hooks}, literal=${!NotAVar}, size=${Size}"
                  MEDIA_BUCKET: !Sub "${MediaBucket}"
                  PLAIN: hello
          Other:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: functions/other/
              Environment:
                Variables:
                  JOBS_URL: !Sub "${Jobs.Arn}"
        """,
        stack_name="portal-local",
    )
    assert tpl.physical_name("MediaBucket") == "portal-local-media-dev"
    assert tpl.physical_name("Jobs") == "jobs.fifo"
    assert tpl.physical_name("Hooks") == "portal-local-hooks"
    assert tpl.resolve({"Fn::FindInMap": ["Sizes", {"Ref": "Stage"}, "Memory"]}) == 128
    assert tpl.function_binary("Worker") == "fallback"
    assert tpl.function_binary("Other") == "other"
    with pytest.raises(st.Unresolvable):
        tpl.resolve({"Ref": "Secret"})
    env, warnings = tpl.resource_env()
    assert env["MEDIA_BUCKET"] == "portal-local-media-dev"
    assert env["JOBS_URL"] == "http://127.0.0.1:5000/000000000000/jobs.fifo"
    assert env["JOBS_NAME"] == "jobs.fifo"
    assert "STAGE" not in env and "PLAIN" not in env and "SECRET" not in env
    assert any("JOBS_URL" in w and "conflicts" in w for w in warnings)
    # ${Size} is not a resource, a parameter or a Sub variable: that variable is reported, not fatal
    assert "HOOKS" not in env and any(w.startswith("Worker: HOOKS") for w in warnings)

    overridden = tpl_from(json.dumps(tpl.doc), stack_name="s", parameters={"Stage": "prod"})
    assert overridden.physical_name("Hooks") == "hooks-prod"
    assert overridden.physical_name("MediaBucket") == "s-media-prod"


def test_a_bucket_name_spelled_out_with_sub_is_a_resource_env_var():
    # A function that names its bucket with the same !Sub as the bucket (no Ref: the bucket's
    # notification to the function would make a cycle) gets the local name; other !Sub strings
    # of pseudo parameters only are no resource.
    tpl = tpl_from(
        """
        Resources:
          MediaBucket:
            Type: AWS::S3::Bucket
            Properties:
              BucketName: !Sub "${AWS::StackName}-${AWS::AccountId}-media"
          Worker:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: functions/worker
              Environment:
                Variables:
                  MEDIA_BUCKET: !Sub "${AWS::StackName}-${AWS::AccountId}-media"
                  GREETING: !Sub "hello ${AWS::Region}"
        """,
        stack_name="portal-local",
    )
    env, warnings = tpl.resource_env()
    assert env == {"MEDIA_BUCKET": f"portal-local-{tpl.account}-media"}
    assert warnings == []


def test_objects_a_cdn_reads_are_read_anonymously_locally():
    tpl = tpl_from(
        """
        Resources:
          Media:
            Type: AWS::S3::Bucket
            Properties: {BucketName: !Sub "${AWS::StackName}-media"}
          Private:
            Type: AWS::S3::Bucket
          MediaPolicy:
            Type: AWS::S3::BucketPolicy
            Properties:
              Bucket: !Ref Media
              PolicyDocument:
                Statement:
                  - Effect: Deny
                    Principal: "*"
                    Action: "s3:*"
                    Resource: [!GetAtt Media.Arn, !Sub "${Media.Arn}/*"]
                  - Effect: Allow
                    Principal: {Service: cloudfront.amazonaws.com}
                    Action: s3:GetObject
                    Resource: !Sub "${Media.Arn}/media/*"
          PrivatePolicy:
            Type: AWS::S3::BucketPolicy
            Properties:
              Bucket: !Ref Private
              PolicyDocument:
                Statement:
                  - Effect: Allow
                    Principal: {AWS: arn:aws:iam::123456789012:root}
                    Action: s3:GetObject
                    Resource: !Sub "${Private.Arn}/*"
        """,
        stack_name="portal-local",
    )
    assert stack.cdn_reads(tpl) == {"portal-local-media": ["media/*"]}


def test_sub_with_variables_and_no_value():
    tpl = tpl_from(
        """
        Resources:
          Q: {Type: AWS::SQS::Queue, Properties: {QueueName: q1}}
        """,
        stack_name="st",
    )
    assert tpl.resolve({"Fn::Sub": ["${A}/${Q.Arn}/${AWS::Region}", {"A": {"Ref": "AWS::StackName"}}]}) == \
        "st/arn:aws:sqs:us-east-1:000000000000:q1/us-east-1"
    assert tpl.resolve({"K": {"Ref": "AWS::NoValue"}, "L": [1, {"Ref": "AWS::NoValue"}]}) == {"L": [1]}


def test_repository_template_loads_if_present():
    path = os.path.join(ROOT, "template.yaml")
    if not os.path.exists(path):
        pytest.skip("no template.yaml yet")
    tpl = st.Template.from_file(path, parameters={"Stage": "dev"})
    for fn in tpl.functions():
        assert tpl.function_binary(fn)
    tpl.resource_env()  # must not raise
    for lid in tpl.resources_of(st.BUCKET, st.TABLE, st.QUEUE, st.BUS):
        assert tpl.physical_name(lid)


def test_stack_without_template_is_a_no_op(tmp_path):
    out = tmp_path / "resources.env"
    rc = stack.main(["resources", "--template", str(tmp_path / "missing.yaml"), "--env-out", str(out)])
    assert rc == 0 and out.read_text() == ""


# ------------------------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("expr", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(2 hours)", 7200), ("rate(1 day)", 86400)],
)
def test_rate(expr, seconds):
    s = pump.parse_schedule(expr)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert s.next_after(t0, None) == t0 + timedelta(seconds=seconds)
    # a slow invocation does not make it catch up
    assert s.next_after(t0 + timedelta(seconds=seconds * 3.5), t0) == t0 + timedelta(seconds=seconds * 4)


@pytest.mark.parametrize("expr", ["rate(0 minutes)", "rate(1 fortnight)", "every 5 minutes", "cron(1 2 3)"])
def test_bad_schedules(expr):
    with pytest.raises(ValueError):
        pump.parse_schedule(expr)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("cron(0/15 * * * ? *)", "2026-03-04T10:07:30", "2026-03-04T10:15:00"),
        ("cron(*/15 * * * ? *)", "2026-03-04T10:45:00", "2026-03-04T11:00:00"),
        ("cron(0 12 * * ? *)", "2026-03-04T12:00:00", "2026-03-05T12:00:00"),
        ("cron(5 8-10 ? * MON-FRI *)", "2026-03-06T10:05:00", "2026-03-09T08:05:00"),  # Fri -> Mon
        ("cron(0 0 L * ? *)", "2026-02-10T00:00:00", "2026-02-28T00:00:00"),
        ("cron(30 9 ? * 2#1 *)", "2026-03-04T00:00:00", "2026-04-06T09:30:00"),  # first Monday
        ("cron(0 6,18 1 JAN ? 2027)", "2026-03-04T00:00:00", "2027-01-01T06:00:00"),
        ("cron(* * * * ? *)", "2026-03-04T10:07:30", "2026-03-04T10:08:00"),
    ],
)
def test_cron(expr, after, expected):
    s = pump.parse_schedule(expr)
    got = s.next_after(datetime.fromisoformat(after).replace(tzinfo=UTC))
    assert got == datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_virtual_clock_runs_faster_by_the_time_scale():
    clock = pump.VirtualClock(0.02)
    target = clock.now() + timedelta(minutes=1)
    assert 1.1 < clock.real_seconds_until(target) <= 1.2


# ------------------------------------------------------------------------------------------------
# Discovery, patterns, event shapes
# ------------------------------------------------------------------------------------------------

def test_discover_finds_one_event_of_each_kind():
    tpl = st.Template.from_file(PUMP_TEMPLATE, stack_name="pt-x")
    specs = {s.name: s for s in pump.discover(tpl, log=lambda _l: None)}
    assert {n: s.kind for n, s in specs.items()} == {
        "Tick": "Schedule", "Work": "SQS", "Domain": "EventBridgeRule", "Upload": "S3",
    }
    assert all(s.binary == "pump-probe" for s in specs.values())
    assert specs["Work"].props["Queue"] == "arn:aws:sqs:us-east-1:000000000000:pt-x-work"
    assert specs["Domain"].props["EventBusName"] == "pt-x-bus"
    assert specs["Upload"].props["Bucket"] == "pt-x-uploads"
    assert pump.rule_name_for(tpl, specs["Domain"]) == "pt-x-PumpProbe-Domain"
    assert pump.pump_queue_name("pt-x-PumpProbe-Domain") == "pump-pt-x-PumpProbe-Domain"
    assert len(pump.pump_queue_name("x" * 200)) == 80


def test_discover_skips_http_and_reports_unsupported():
    tpl = tpl_from(
        """
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: functions/fn
              Events:
                Get: {Type: HttpApi, Properties: {Path: /x, Method: GET}}
                Stream: {Type: Kinesis, Properties: {Stream: arn:aws:kinesis:x}}
                Paused: {Type: Schedule, Properties: {Schedule: rate(1 minute), Enabled: false}}
        """
    )
    lines = []
    specs = pump.discover(tpl, log=lines.append)
    assert [s.name for s in specs] == ["Paused"] and not pump.is_enabled(specs[0])
    assert any("Kinesis" in line for line in lines)


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ({"source": ["a", "b"]}, {"source": "b"}, True),
        ({"source": ["a"]}, {"source": "c"}, False),
        ({"detail": {"n": [{"numeric": [">", 1, "<=", 5]}]}}, {"detail": {"n": 5}}, True),
        ({"detail": {"n": [{"numeric": [">", 1]}]}}, {"detail": {"n": 1}}, False),
        ({"body": {"kind": [{"prefix": "order."}]}}, {"body": {"kind": "order.paid"}}, True),
        ({"body": {"kind": [{"anything-but": ["x"]}]}}, {"body": {"kind": "x"}}, False),
        ({"body": {"id": [{"exists": False}]}}, {"body": {}}, True),
        ({"body": {"tags": ["red"]}}, {"body": {"tags": ["blue", "red"]}}, True),
        ({"$or": [{"a": [1]}, {"b": [2]}]}, {"b": 2}, True),
    ],
)
def test_pattern_matches(pattern, event, expected):
    assert pump.pattern_matches(pattern, event) is expected


def test_sqs_record_has_the_lambda_shape():
    m = {
        "MessageId": "m-1", "ReceiptHandle": "rh", "MD5OfBody": "md5", "Body": "hello",
        "Attributes": {"SenderId": "S", "SentTimestamp": "1", "ApproximateReceiveCount": "2",
                       "ApproximateFirstReceiveTimestamp": "3"},
        "MD5OfMessageAttributes": "md5a",
        "MessageAttributes": {"a": {"DataType": "String", "StringValue": "x"},
                              "b": {"DataType": "Binary", "BinaryValue": b"\x01\x02"}},
    }
    r = pump.sqs_record(m, "arn:aws:sqs:us-east-1:000000000000:q", "us-east-1")
    assert r == {
        "messageId": "m-1",
        "receiptHandle": "rh",
        "body": "hello",
        "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1", "SenderId": "S",
                       "ApproximateFirstReceiveTimestamp": "3"},
        "messageAttributes": {
            "a": {"stringValue": "x", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "b": {"binaryValue": base64.b64encode(b"\x01\x02").decode(), "stringListValues": [],
                  "binaryListValues": [], "dataType": "Binary"},
        },
        "md5OfBody": "md5",
        "md5OfMessageAttributes": "md5a",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:q",
        "awsRegion": "us-east-1",
    }


def test_moto_s3_record_is_completed_to_the_aws_shape():
    moto_record = {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-23T23:24:03.998133", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
               "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
               "object": {"key": "up%2Fa+b.png", "size": 5, "eTag": "e"}},
    }
    r = pump.normalize_s3_record(moto_record, "000000000000")
    assert r["eventTime"] == "2026-11-23T23:24:03.998Z"
    assert r["userIdentity"]["principalId"] and r["requestParameters"]["sourceIPAddress"] == "127.0.0.1"
    assert set(r["responseElements"]) == {"x-amz-request-id", "x-amz-id-2"}
    assert r["s3"]["bucket"]["ownerIdentity"] == {"principalId": "000000000000"}
    assert r["s3"]["object"]["key"] == "up%2Fa+b.png" and r["s3"]["object"]["sequencer"]
    assert "urlDecodedKey" not in r["s3"]["object"]  # AWS does not send it either
    assert pump.normalize_s3_record(r, "0")["eventTime"] == r["eventTime"]


def test_json_path():
    doc = {"detail": {"items": [{"id": 7}]}}
    assert pump.json_path(doc, "$") is doc
    assert pump.json_path(doc, "$.detail.items[0].id") == 7


# ------------------------------------------------------------------------------------------------
# SQS batch bookkeeping (fake SQS client and invoker)
# ------------------------------------------------------------------------------------------------

class FakeSqs:
    def __init__(self):
        self.deleted: list[str] = []
        self.released: list[tuple[str, int]] = []

    def delete_message_batch(self, QueueUrl, Entries):
        self.deleted += [e["ReceiptHandle"] for e in Entries]

    def change_message_visibility_batch(self, QueueUrl, Entries):
        self.released += [(e["ReceiptHandle"], e["VisibilityTimeout"]) for e in Entries]


def fake_pump(result):
    args = argparse.Namespace(invoke_url="http://127.0.0.1:1", invoke_timeout=1, time_scale=1.0,
                              region="us-east-1", retry_visibility=1)
    p = pump.Pump(args, st.Template({}), [])
    sqs = FakeSqs()
    p.client = lambda service: sqs  # type: ignore[method-assign]
    p.invoker.invoke = lambda binary, payload: result(payload)  # type: ignore[method-assign]
    p.log = lambda line: None  # type: ignore[method-assign]
    return p, sqs


def messages(*bodies):
    return [{"MessageId": f"id-{b}", "ReceiptHandle": f"rh-{b}", "Body": b, "Attributes": {}} for b in bodies]


SPEC = pump.EventSpec("Fn", "fn", "Work", "SQS")


def test_partial_batch_failure_returns_only_the_failed_items():
    p, sqs = fake_pump(lambda payload: (True, {"batchItemFailures": [{"itemIdentifier": "id-b"}]}, "ok"))
    p.deliver_sqs(SPEC, "url", "arn", messages("a", "b", "c"), report=True, filters=[])
    assert sorted(sqs.deleted) == ["rh-a", "rh-c"] and sqs.released == [("rh-b", 1)]


def test_failed_invocation_returns_the_whole_batch():
    p, sqs = fake_pump(lambda payload: (False, {"errorType": "E"}, "E: boom"))
    p.deliver_sqs(SPEC, "url", "arn", messages("a", "b"), report=True, filters=[])
    assert sqs.deleted == [] and sorted(sqs.released) == [("rh-a", 1), ("rh-b", 1)]


def test_unknown_item_identifier_fails_the_whole_batch():
    p, sqs = fake_pump(lambda payload: (True, {"batchItemFailures": [{"itemIdentifier": "nope"}]}, "ok"))
    p.deliver_sqs(SPEC, "url", "arn", messages("a", "b"), report=True, filters=[])
    assert sqs.deleted == [] and len(sqs.released) == 2


def test_item_failures_are_ignored_without_report_batch_item_failures():
    p, sqs = fake_pump(lambda payload: (True, {"batchItemFailures": [{"itemIdentifier": "id-a"}]}, "ok"))
    p.deliver_sqs(SPEC, "url", "arn", messages("a", "b"), report=False, filters=[])
    assert sorted(sqs.deleted) == ["rh-a", "rh-b"] and sqs.released == []


def test_filter_criteria_delete_what_does_not_match():
    seen = []
    p, sqs = fake_pump(lambda payload: (seen.append(payload), (True, None, "ok"))[1])
    p.deliver_sqs(SPEC, "url", "arn", messages('{"kind":"keep"}', '{"kind":"drop"}', "not json"), report=True,
                  filters=[{"body": {"kind": ["keep"]}}])
    assert [r["body"] for r in seen[0]["Records"]] == ['{"kind":"keep"}']
    assert sorted(sqs.deleted) == sorted(['rh-{"kind":"drop"}', "rh-not json", 'rh-{"kind":"keep"}'])


# ------------------------------------------------------------------------------------------------
# JWKS
# ------------------------------------------------------------------------------------------------

def _modulus(pem: str) -> int:
    out = subprocess.run(["openssl", "rsa", "-in", pem, "-noout", "-modulus"], check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip().split("=", 1)[1], 16)


def _b64int(s: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")


def test_jwks_matches_a_fresh_key(tmp_path):
    pem, out = str(tmp_path / "k.pem"), str(tmp_path / "jwks.json")
    assert jwks.main(["--create", pem, out, "kid-1"]) == 0
    key = json.load(open(out))["keys"][0]
    assert key["kid"] == "kid-1" and key["alg"] == "RS256" and key["kty"] == "RSA" and key["use"] == "sig"
    assert _b64int(key["n"]) == _modulus(pem) and _b64int(key["e"]) == 65537
    assert "=" not in key["n"] and _modulus(pem).bit_length() == 2048
    assert jwks.main([str(tmp_path / "absent.pem"), out, "k"]) == 1


def test_committed_test_jwks_matches_the_test_key():
    keys = os.path.join(ROOT, "shared", "testkit", "keys")
    key = json.load(open(os.path.join(keys, "test-jwks.json")))["keys"][0]
    assert key["kid"] == "test-key"
    assert _b64int(key["n"]) == _modulus(os.path.join(keys, "test-key.pem"))
