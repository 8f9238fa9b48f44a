"""The event pump end to end: moto + `cargo lambda watch` + the pump-probe function + Redis.

Needs the services of `local/up --services-only` and a `cargo lambda watch` on 127.0.0.1:9000 (the
test command, local/test, starts both); skips with a message when they do not answer.

One run: a unique stack name (so every queue, bus and bucket is new), the resources of
local/tests/pump-template.yaml created with local/stack.py's code, local/pump.py started against
it with --time-scale 0.02, then it checks what pump-probe recorded in Redis (`pump-probe:<kind>`
lists, filtered to this run):
- a Scheduled Event arrived (rate(1 minute) -> every 1.2 s);
- SQS messages arrived in one batch; the ones that succeeded were deleted, the "fail" message came
  back maxReceiveCount (2) times and then sat in the DLQ;
- a PutEvents matching the rule's pattern arrived, a non-matching one did not;
- a PutObject under the filter prefix arrived as an S3 record whose key decodes to the object key,
  and one outside the prefix did not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

LOCAL = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(LOCAL)
sys.path.insert(0, LOCAL)

import samtemplate as st  # noqa: E402
from stack import LocalStack  # noqa: E402

PUMP_TEMPLATE = os.path.join(LOCAL, "tests", "pump-template.yaml")
WATCH_URL = os.environ.get("PUMP_TEST_WATCH_URL", "http://127.0.0.1:9000")
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", st.DEFAULT_ENDPOINT)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
# The first invocation may compile pump-probe (minutes on a busy 2-core machine).
WARMUP_TIMEOUT = float(os.environ.get("PUMP_TEST_WARMUP_TIMEOUT", "900"))
WAIT = float(os.environ.get("PUMP_TEST_WAIT", "120"))


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3).close()
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


class Redis:
    """Just enough RESP for LRANGE (stdlib only)."""

    def __init__(self, url: str):
        u = urllib.parse.urlparse(url)
        self.addr = (u.hostname or "127.0.0.1", u.port or 6379)

    def command(self, *args: str):
        with socket.create_connection(self.addr, timeout=5) as s:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            s.sendall(payload.encode())
            return self._read(s.makefile("rb"))

    def _read(self, f):
        line = f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read(f) for _ in range(n)]
        raise RuntimeError(f"unexpected redis reply {line!r}")

    def entries(self, kind: str) -> list[dict]:
        return [json.loads(x) for x in self.command("LRANGE", f"pump-probe:{kind}", "0", "-1") or []]


def invoke(binary: str, payload: dict, timeout: float):
    req = urllib.request.Request(
        f"{WATCH_URL}/2015-03-31/functions/{binary}/invocations",
        data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_until(what: str, check, timeout: float = WAIT, interval: float = 0.5, on_timeout=None):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = on_timeout() if on_timeout else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def services():
    if not http_answers(ENDPOINT + "/moto-api/"):
        pytest.skip(f"no moto server on {ENDPOINT}: run local/up --services-only (local/test does)")
    redis = Redis(REDIS_URL)
    try:
        assert redis.command("PING") == "PONG"
    except (OSError, RuntimeError, AssertionError):
        pytest.skip(f"no Redis on {REDIS_URL}: run local/up --services-only (local/test does)")
    if not http_answers(WATCH_URL + "/"):
        pytest.skip(f"no cargo lambda watch on {WATCH_URL}: start it (local/test does, local/up too)")
    return redis


@pytest.fixture(scope="module")
def run(services, tmp_path_factory):
    run_id = uuid.uuid4().hex[:10]
    stack_name = f"pt-{run_id}"
    account = st.endpoint_account(ENDPOINT)
    tpl = st.Template.from_file(PUMP_TEMPLATE, stack_name=stack_name, account=account, endpoint=ENDPOINT)
    local = LocalStack(tpl, ENDPOINT, "us-east-1", log=lambda _l: None)
    local.apply()
    pump_proc = None
    log_path = tmp_path_factory.mktemp("pump") / "pump.log"
    try:
        # Warm the function up (the first invocation compiles it), so the pump's deliveries are timely.
        status, body = invoke("pump-probe", {
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "Pump Test Warmup", "source": "pump.test",
            "account": account, "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"run": run_id, "warmup": True},
        }, WARMUP_TIMEOUT)
        if status != 200 or '"errorType"' in body:
            pytest.fail(f"pump-probe does not answer through {WATCH_URL} (HTTP {status}): {body[:2000]}\n"
                        f"see local/.state/logs/watch.log")

        # Queue the SQS work before the pump starts, so the first receive sees a whole batch.
        sqs = local.client("sqs")
        queue_url = tpl.queue_url("ProbeQueue")
        bodies = [f"ok-1 {run_id}", f"ok-2 {run_id}", f"please fail {run_id}"]
        sqs.send_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "MessageBody": b, "MessageAttributes": {"run": {"DataType": "String", "StringValue": run_id}}}
            for i, b in enumerate(bodies)
        ])

        log = open(log_path, "w")
        pump_proc = subprocess.Popen(
            [sys.executable, os.path.join(LOCAL, "pump.py"), "--template", PUMP_TEMPLATE,
             "--stack-name", stack_name, "--endpoint", ENDPOINT, "--invoke-url", WATCH_URL,
             "--time-scale", "0.02", "--poll-wait", "1", "--retry-visibility", "1", "--cleanup"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )

        def pump_log() -> str:
            log.flush()
            return "pump log:\n" + log_path.read_text()

        def running():
            if pump_proc.poll() is not None:
                pytest.fail(f"pump.py exited with {pump_proc.returncode}\n{pump_log()}")
            return "pump: running" in log_path.read_text()

        wait_until("the pump to set up its sources", running, timeout=60, on_timeout=pump_log)

        events = local.client("events")
        bus = tpl.physical_name("ProbeBus")
        events.put_events(Entries=[
            {"EventBusName": bus, "Source": "portal.test", "DetailType": "Probe Happened",
             "Detail": json.dumps({"run": run_id, "n": 1})},
            {"EventBusName": bus, "Source": "portal.other", "DetailType": "Probe Happened",
             "Detail": json.dumps({"run": run_id, "n": 2})},
        ])
        s3 = local.client("s3")
        bucket = tpl.physical_name("ProbeBucket")
        key = f"uploads/report {run_id}+final.csv"
        s3.put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n", ContentType="text/csv")
        s3.put_object(Bucket=bucket, Key=f"other/{run_id}.txt", Body=b"x", ContentType="text/plain")

        yield {
            "id": run_id, "tpl": tpl, "local": local, "redis": services, "bodies": bodies, "key": key,
            "bucket": bucket, "queue_url": queue_url, "pump_log": pump_log,
        }
    finally:
        if pump_proc is not None and pump_proc.poll() is None:
            pump_proc.send_signal(signal.SIGTERM)
            try:
                pump_proc.wait(20)
            except subprocess.TimeoutExpired:
                pump_proc.kill()
                pump_proc.wait(5)
        try:
            local.destroy()
        except Exception as e:  # noqa: BLE001 - cleanup must not hide the test's own result
            print(f"cleanup of {stack_name} failed: {e}")


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------

def test_schedule_delivers_a_scheduled_event(run):
    stack_name = run["tpl"].stack_name

    def arrived():
        return [e for e in run["redis"].entries("schedule")
                if any(stack_name in r for r in e.get("resources") or [])]

    got = wait_until("a Scheduled Event", arrived, on_timeout=run["pump_log"])
    assert got[0]["source"] == "aws.events" and got[0]["detail_type"] == "Scheduled Event"
    assert got[0]["detail"] == {}
    assert got[0]["resources"][0].startswith("arn:aws:events:us-east-1:")


def test_sqs_batch_partial_failure_and_redrive(run):
    queue_arn = run["tpl"].arn("ProbeQueue")
    ok1, ok2, bad = run["bodies"]

    def records():
        out = []
        for entry in run["redis"].entries("sqs"):
            recs = [r for r in entry["records"] if r["queue"] == queue_arn]
            if recs:
                out.append(recs)
        return out

    sqs = run["local"].client("sqs")
    dlq_url = run["tpl"].queue_url("ProbeDeadLetterQueue")

    def in_dlq():
        attrs = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"]) >= 1

    wait_until("the failing message in the DLQ", in_dlq, on_timeout=run["pump_log"])
    batches = records()
    flat = [r["body"] for batch in batches for r in batch]
    assert max(len(b) for b in batches) >= 2, f"expected a batch of several messages, got {batches}"
    assert flat.count(ok1) == 1 and flat.count(ok2) == 1, f"succeeded messages were redelivered: {flat}"
    assert flat.count(bad) == 2, f"the failing message should be tried maxReceiveCount=2 times: {flat}"
    counts = sorted(r["receive_count"] for batch in batches for r in batch if r["body"] == bad)
    assert counts == ["1", "2"]

    dlq = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert [m["Body"] for m in dlq.get("Messages", [])] == [bad]
    attrs = sqs.get_queue_attributes(QueueUrl=run["queue_url"], AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_eventbridge_rule_delivers_only_matching_events(run):
    def mine():
        return [e for e in run["redis"].entries("eventbridge")
                if isinstance(e.get("detail"), dict) and e["detail"].get("run") == run["id"]
                and not e["detail"].get("warmup")]

    got = wait_until("the matching EventBridge event", mine, on_timeout=run["pump_log"])
    time.sleep(3)  # give a wrongly routed second event time to show up
    got = mine()
    assert [e["detail"]["n"] for e in got] == [1]
    assert got[0]["source"] == "portal.test" and got[0]["detail_type"] == "Probe Happened"


def test_s3_object_created_delivers_the_record(run):
    def mine():
        return [o for e in run["redis"].entries("s3") for o in e["objects"] if o["bucket"] == run["bucket"]]

    got = wait_until("the S3 ObjectCreated record", mine, on_timeout=run["pump_log"])
    time.sleep(2)  # the object outside the filter prefix must not follow
    got = mine()
    assert len(got) == 1, got
    assert urllib.parse.unquote_plus(got[0]["key"]) == run["key"]
    assert got[0]["event"].startswith("ObjectCreated:") and got[0]["size"] == 8
