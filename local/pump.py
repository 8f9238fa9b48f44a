#!/usr/bin/env python3
"""The local event pump: drives a SAM template's non-HTTP triggers through `cargo lambda watch`.

    python3 local/pump.py [--template template.yaml] [--time-scale 1.0] [--only FN ...] [--list]

For every AWS::Serverless::Function event it finds:

- Schedule / ScheduleV2 (rate(...), cron(...), at(...)): fires on its schedule and delivers the
  EventBridge "Scheduled Event" envelope, or the event's Input when it has one (as AWS does).
  --time-scale F multiplies every period (0.02: rate(1 minute) fires every 1.2 s).
- SQS: polls the queue and invokes with a real SQS event, batching up to BatchSize; deletes the
  batch on success except the items reported in `batchItemFailures` (when FunctionResponseTypes
  has ReportBatchItemFailures), which go back to the queue after --retry-visibility seconds;
  the queue's RedrivePolicy moves them to the DLQ after maxReceiveCount (moto does that on
  receive). A failed invocation returns the whole batch. FilterCriteria is honoured.
- EventBridgeRule / CloudWatchEvent: puts the rule (Pattern, EventBusName) in moto with a pump-owned
  SQS queue `pump-<rule>` as its target, and delivers each matching event (Input/InputPath honoured).
- S3: points the bucket's notification configuration at a pump-owned queue for the event's
  Events/Filter and delivers each S3 event (the s3:TestEvent is skipped).

Invocations go to http://127.0.0.1:9000/2015-03-31/functions/<binary>/invocations, where binary is
Metadata.BuildProperties.Binary, else the basename of CodeUri. Asynchronous sources (EventBridge, S3)
get 2 retries like Lambda's async invocation, then the event is dropped with a log line. One line is
logged per delivery. SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import samtemplate as st  # noqa: E402

HTTP_EVENT_TYPES = {"Api", "HttpApi"}
SUPPORTED = {"Schedule", "ScheduleV2", "SQS", "EventBridgeRule", "CloudWatchEvent", "S3"}
ASYNC_ATTEMPTS = 3  # Lambda async invocation: the first try plus 2 retries


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(dt: datetime, millis: bool = False) -> str:
    dt = dt.astimezone(timezone.utc)
    if millis:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# ============================================================================================
# Schedules
# ============================================================================================

class RateSchedule:
    UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}

    def __init__(self, value: int, unit: str):
        if value <= 0:
            raise ValueError("rate value must be positive")
        self.period = timedelta(seconds=value * self.UNITS[unit])

    def next_after(self, after: datetime, last: datetime | None) -> datetime:
        if last is None:
            return after + self.period
        due = last + self.period
        while due <= after:  # skip the periods missed during a slow invocation (AWS does not catch up)
            due += self.period
        return due


class AtSchedule:
    def __init__(self, when: datetime):
        self.when = when

    def next_after(self, after: datetime, last: datetime | None) -> datetime | None:
        if last is not None or self.when <= after:
            return None
        return self.when


MONTHS = {m: i for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}


def _cron_field(text: str, lo: int, hi: int, names: dict | None = None) -> set[int] | None:
    """Parse one cron field into the set of allowed values; None means any."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()

    def num(s: str) -> int:
        s = s.upper()
        if names and s in names:
            return names[s]
        if not s.isdigit():
            raise ValueError(f"bad cron value {s!r}")
        n = int(s)
        if not lo <= n <= hi:
            raise ValueError(f"cron value {n} outside {lo}-{hi}")
        return n

    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/", 1)
            step = int(step_s)
            if step <= 0:
                raise ValueError("cron step must be positive")
        if part in ("*", "?"):
            start, end = lo, hi
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = num(a), num(b)
        else:
            start = num(part)
            end = hi if step != 1 else start
        values.update(range(start, end + 1, step))
    return values


class CronSchedule:
    """EventBridge cron(minutes hours day-of-month month day-of-week year), in UTC.

    Fields take *, ?, numbers, ranges a-b, lists a,b, steps */n and a/n, month and day names; day
    of month takes L (last day); day of week (1=SUN .. 7=SAT) takes n#k (k-th weekday of the month)
    and nL (last such weekday). W is approximated by the plain day.
    """

    def __init__(self, expr: str):
        parts = expr.split()
        if len(parts) == 5:
            parts.append("*")
        if len(parts) != 6:
            raise ValueError(f"cron needs 6 fields, got {len(parts)}: {expr!r}")
        minute, hour, dom, month, dow, year = parts
        self.minutes = _cron_field(minute, 0, 59)
        self.hours = _cron_field(hour, 0, 23)
        self.months = _cron_field(month, 1, 12, MONTHS)
        self.years = _cron_field(year, 1970, 2199)
        self.dom_last = dom.upper() == "L"
        self.dom = None if self.dom_last else _cron_field(dom.upper().replace("W", "").replace("L", "") or "*", 1, 31)
        self.dow_nth: tuple[int, int] | None = None
        self.dow_last: int | None = None
        up = dow.upper()
        if "#" in up:
            d, k = up.split("#", 1)
            self.dow_nth = (DAYS.get(d) or int(d), int(k))
            self.dow = None
        elif up.endswith("L") and up != "L":
            self.dow_last = DAYS.get(up[:-1]) or int(up[:-1])
            self.dow = None
        else:
            self.dow = _cron_field("7" if up == "L" else up, 1, 7, DAYS)

    def _day_matches(self, d: datetime) -> bool:
        if self.months is not None and d.month not in self.months:
            return False
        if self.years is not None and d.year not in self.years:
            return False
        last_day = calendar.monthrange(d.year, d.month)[1]
        if self.dom_last and d.day != last_day:
            return False
        if self.dom is not None and d.day not in self.dom:
            return False
        cron_dow = (d.isoweekday() % 7) + 1  # SUN=1 .. SAT=7
        if self.dow is not None and cron_dow not in self.dow:
            return False
        if self.dow_nth is not None:
            want, k = self.dow_nth
            if cron_dow != want or (d.day - 1) // 7 + 1 != k:
                return False
        if self.dow_last is not None and (cron_dow != self.dow_last or d.day + 7 <= last_day):
            return False
        return True

    def next_after(self, after: datetime, last: datetime | None = None) -> datetime | None:
        start = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
        minutes = sorted(self.minutes) if self.minutes is not None else list(range(60))
        hours = sorted(self.hours) if self.hours is not None else list(range(24))
        day = start.replace(hour=0, minute=0)
        for _ in range(366 * 8):
            if self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        candidate = day.replace(hour=h, minute=m)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        return None


def parse_schedule(expr: str):
    expr = expr.strip()
    m = re.fullmatch(r"rate\(\s*(\d+)\s+([a-zA-Z]+)\s*\)", expr)
    if m:
        unit = m.group(2).lower()
        if unit not in RateSchedule.UNITS:
            raise ValueError(f"unsupported rate unit {unit!r} in {expr!r}")
        return RateSchedule(int(m.group(1)), unit)
    m = re.fullmatch(r"cron\((.+)\)", expr)
    if m:
        return CronSchedule(m.group(1))
    m = re.fullmatch(r"at\((.+)\)", expr)
    if m:
        return AtSchedule(datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc))
    raise ValueError(f"unsupported schedule expression {expr!r}")


class VirtualClock:
    """UTC time that runs 1/scale times faster than the wall clock (scale 1: the wall clock)."""

    def __init__(self, scale: float):
        self.scale = scale
        self._real0 = time.monotonic()
        self._virtual0 = utcnow()

    def now(self) -> datetime:
        return self._virtual0 + timedelta(seconds=(time.monotonic() - self._real0) / self.scale)

    def real_seconds_until(self, when: datetime) -> float:
        return max(0.0, (when - self.now()).total_seconds() * self.scale)


# ============================================================================================
# Event patterns (Lambda FilterCriteria; EventBridge syntax)
# ============================================================================================

def _match_condition(cond: Any, value: Any, present: bool) -> bool:
    if isinstance(cond, dict):
        (op, arg), = cond.items()
        if op == "exists":
            return present == bool(arg)
        if not present:
            return False
        if op == "prefix":
            if isinstance(arg, dict):  # {"prefix": {"equals-ignore-case": ...}}
                return isinstance(value, str) and value.lower().startswith(str(arg.get("equals-ignore-case", "")).lower())
            return isinstance(value, str) and value.startswith(arg)
        if op == "suffix":
            if isinstance(arg, dict):
                return isinstance(value, str) and value.lower().endswith(str(arg.get("equals-ignore-case", "")).lower())
            return isinstance(value, str) and value.endswith(arg)
        if op == "equals-ignore-case":
            return isinstance(value, str) and value.lower() == str(arg).lower()
        if op == "wildcard":
            return isinstance(value, str) and re.fullmatch(".*".join(re.escape(p) for p in str(arg).split("*")), value) is not None
        if op == "anything-but":
            if isinstance(arg, dict):
                return not _match_condition(arg, value, present)
            options = arg if isinstance(arg, list) else [arg]
            return value not in options
        if op == "numeric":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return False
            ops = {"=": lambda a, b: a == b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
                   ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
            return all(ops[arg[i]](value, arg[i + 1]) for i in range(0, len(arg), 2))
        raise ValueError(f"unsupported pattern operator {op!r}")
    return present and value == cond


def pattern_matches(pattern: dict, event: Any) -> bool:
    if not isinstance(pattern, dict):
        return False
    for key, cond in pattern.items():
        if key == "$or":
            if not any(pattern_matches(p, event) for p in cond):
                return False
            continue
        present = isinstance(event, dict) and key in event
        value = event.get(key) if present else None
        if isinstance(cond, dict):
            if not (present and pattern_matches(cond, value)):
                return False
            continue
        conds = cond if isinstance(cond, list) else [cond]
        values = value if isinstance(value, list) and value else [value]
        if not any(_match_condition(c, v, present) for c in conds for v in values):
            return False
    return True


# ============================================================================================
# Discovery
# ============================================================================================

@dataclass
class EventSpec:
    function: str  # logical id
    binary: str
    name: str  # the event's key under Events
    kind: str  # SAM event Type
    props: dict = field(default_factory=dict)


def discover(tpl: st.Template, only: list[str] | None = None, log: Callable[[str], None] = print) -> list[EventSpec]:
    specs: list[EventSpec] = []
    for fn in tpl.functions():
        binary = tpl.function_binary(fn)
        if only and fn not in only and binary not in only:
            continue
        events = tpl.properties(fn).get("Events") or {}
        for name, event in events.items():
            kind = (event or {}).get("Type")
            if kind in HTTP_EVENT_TYPES:
                continue
            if kind not in SUPPORTED:
                log(f"pump: {fn}/{name}: event type {kind} is not driven locally (skipped)")
                continue
            props = {}
            for key, raw in ((event or {}).get("Properties") or {}).items():
                try:
                    value = tpl.resolve(raw)
                except (st.Unresolvable, KeyError, IndexError, TypeError, ValueError) as e:
                    log(f"pump: {fn}/{name}: property {key} not resolved locally ({e}); ignored")
                    continue
                if value is not st.NO_VALUE:
                    props[key] = value
            specs.append(EventSpec(fn, binary, name, kind, props))
    return specs


def is_enabled(spec: EventSpec) -> bool:
    p = spec.props
    if p.get("Enabled") is False or str(p.get("Enabled", "")).lower() == "false":
        return False
    return str(p.get("State", "ENABLED")).upper() != "DISABLED"


def rule_name_for(tpl: st.Template, spec: EventSpec) -> str:
    explicit = spec.props.get("Name") or spec.props.get("RuleName")
    if explicit:
        return str(explicit)
    return st.sanitize_name(f"{tpl.stack_name}-{spec.function}-{spec.name}", 64, r"A-Za-z0-9._-")


def pump_queue_name(*parts: str) -> str:
    return st.sanitize_name("pump-" + "-".join(parts), 80)


def json_path(doc: Any, path: str) -> Any:
    """Tiny JSONPath for InputPath: $, $.a.b, $.a[0]."""
    if path in ("", "$"):
        return doc
    if not path.startswith("$"):
        raise ValueError(f"unsupported InputPath {path!r}")
    for token in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path[1:]):
        key, index = token
        doc = doc[int(index)] if index else doc[key]
    return doc


# ============================================================================================
# Invocation
# ============================================================================================

class Invoker:
    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def invoke(self, binary: str, payload: Any) -> tuple[bool, Any, str]:
        """POST the event; returns (ok, parsed response, detail for the log)."""
        url = f"{self.base_url}/2015-03-31/functions/{binary}/invocations"
        data = json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json",
            "X-Amz-Invocation-Type": "RequestResponse",
        })
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status, body, func_error = resp.status, resp.read(), resp.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as e:
            body = e.read()
            return False, _parse(body), f"HTTP {e.code}: {_short(body)}"
        except (urllib.error.URLError, OSError) as e:
            return False, None, f"invoke failed: {getattr(e, 'reason', e)}"
        parsed = _parse(body)
        if func_error:
            return False, parsed, f"function error ({func_error}): {_short(body)}"
        if isinstance(parsed, dict) and "errorType" in parsed:
            return False, parsed, f"{parsed.get('errorType')}: {str(parsed.get('errorMessage', ''))[:200]}"
        if status != 200:
            return False, parsed, f"HTTP {status}: {_short(body)}"
        return True, parsed, "ok"


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


def _short(body: bytes) -> str:
    text = body.decode(errors="replace").strip().replace("\n", " ")
    return text[:200] + ("..." if len(text) > 200 else "")


# ============================================================================================
# Sources
# ============================================================================================

class Pump:
    def __init__(self, args: argparse.Namespace, tpl: st.Template, specs: list[EventSpec]):
        self.args = args
        self.tpl = tpl
        self.specs = specs
        self.stop = threading.Event()
        self.invoker = Invoker(args.invoke_url, args.invoke_timeout)
        self.clock = VirtualClock(args.time_scale)
        self.threads: list[threading.Thread] = []
        self.cleanup_actions: list[Callable[[], None]] = []
        self._stack = None
        self._lock = threading.Lock()
        self._watch_up = True  # assumed until checked; the first check logs only a failure
        self._watch_checked = -1e9

    # -- plumbing ------------------------------------------------------------------------------

    def watch_answers(self) -> bool:
        """True if `cargo lambda watch` answers HTTP (checked at most every 2 s; transitions logged)."""
        with self._lock:
            if time.monotonic() - self._watch_checked < 2.0:
                return self._watch_up
        try:
            urllib.request.urlopen(self.args.invoke_url.rstrip("/") + "/", timeout=3).close()
            up = True
        except urllib.error.HTTPError:
            up = True  # any HTTP answer: the watch is up
        except (urllib.error.URLError, OSError):
            up = False
        with self._lock:
            changed = up != self._watch_up
            self._watch_up, self._watch_checked = up, time.monotonic()
        if changed and not up:
            self.log(f"pump: {self.args.invoke_url} does not answer (is cargo lambda watch running?); "
                     "queues are not polled and schedules are skipped until it does")
        elif changed:
            self.log(f"pump: {self.args.invoke_url} answers")
        return up

    def wait_for_watch(self) -> bool:
        """Block while the watch does not answer, so that queued messages do not use up their
        receive count (and land in a DLQ) just because it is down. False when stopping."""
        while not self.stop.is_set():
            if self.watch_answers():
                return True
            self.stop.wait(2)
        return False

    def log(self, line: str) -> None:
        with self._lock:
            print(f"{rfc3339(utcnow())} {line}", flush=True)

    def delivery(self, spec: EventSpec, kind: str, count: int, ok: bool, detail: str, started: float) -> None:
        ms = int((time.monotonic() - started) * 1000)
        outcome = "ok" if ok else "FAILED"
        self.log(f"{spec.function} ({spec.binary}) {kind} n={count} {outcome} {ms}ms {detail if detail != 'ok' else ''}".rstrip())

    @property
    def stack(self):
        if self._stack is None:
            from stack import LocalStack

            self._stack = LocalStack(self.tpl, self.args.endpoint, self.args.region, log=self.log)
        return self._stack

    def client(self, service: str):
        # boto3 clients are thread-safe; one per service is shared by the sources.
        return self.stack.client(service)

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            while not self.stop.is_set():
                try:
                    target()
                    return
                except Exception as e:  # noqa: BLE001 - keep the source alive
                    self.log(f"pump: {name}: {type(e).__name__}: {e}; retrying in 2s")
                    self.stop.wait(2)

        t = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(t)
        t.start()

    # -- setup ---------------------------------------------------------------------------------

    def start(self) -> None:
        # Create the boto3 clients before any thread starts (client creation is not thread-safe).
        for service in ("sqs", "events", "s3"):
            self.client(service)
        s3_by_bucket: dict[str, list[EventSpec]] = {}
        for spec in self.specs:
            if not is_enabled(spec):
                self.log(f"pump: {spec.function}/{spec.name}: {spec.kind} disabled in the template (skipped)")
                continue
            if spec.kind in ("Schedule", "ScheduleV2"):
                self.start_schedule(spec)
            elif spec.kind == "SQS":
                self.start_sqs(spec)
            elif spec.kind in ("EventBridgeRule", "CloudWatchEvent"):
                self.start_rule(spec)
            elif spec.kind == "S3":
                bucket = spec.props.get("Bucket")
                if not bucket:
                    self.log(f"pump: {spec.function}/{spec.name}: S3 event without a resolvable Bucket (skipped)")
                    continue
                s3_by_bucket.setdefault(str(bucket), []).append(spec)
        for bucket, specs in s3_by_bucket.items():
            self.start_s3(bucket, specs)

    # -- Schedule ------------------------------------------------------------------------------

    def start_schedule(self, spec: EventSpec) -> None:
        expr = spec.props.get("Schedule") if spec.kind == "Schedule" else spec.props.get("ScheduleExpression")
        if not expr:
            self.log(f"pump: {spec.function}/{spec.name}: no schedule expression (skipped)")
            return
        schedule = parse_schedule(str(expr))
        name = rule_name_for(self.tpl, spec)
        if spec.kind == "ScheduleV2":
            group = spec.props.get("GroupName") or "default"
            resource = f"arn:aws:scheduler:{self.args.region}:{self.tpl.account}:schedule/{group}/{name}"
        else:
            resource = f"arn:aws:events:{self.args.region}:{self.tpl.account}:rule/{name}"
        raw_input = spec.props.get("Input")
        self.log(f"pump: {spec.function} ({spec.binary}) {spec.kind} {expr} x{self.args.time_scale:g} -> {resource}")

        def loop() -> None:
            last = None
            while not self.stop.is_set():
                due = schedule.next_after(self.clock.now(), last)
                if due is None:
                    return
                if self.stop.wait(self.clock.real_seconds_until(due)):
                    return
                last = due
                if not self.watch_answers():
                    continue  # logged by watch_answers; a missed tick is not made up later
                fired = due if self.args.time_scale == 1 else utcnow()
                if raw_input is not None:
                    payload = json.loads(raw_input) if isinstance(raw_input, str) else raw_input
                else:
                    payload = {
                        "version": "0",
                        "id": str(uuid.uuid4()),
                        "detail-type": "Scheduled Event",
                        "source": "aws.events",
                        "account": self.tpl.account,
                        "time": rfc3339(fired),
                        "region": self.args.region,
                        "resources": [resource],
                        "detail": {},
                    }
                started = time.monotonic()
                ok, _, detail = self.invoker.invoke(spec.binary, payload)
                self.delivery(spec, "schedule", 1, ok, detail, started)

        self.spawn(f"{spec.function}/{spec.name}", loop)

    # -- SQS -----------------------------------------------------------------------------------

    def queue_url_from_arn(self, arn: str) -> str:
        name = arn.split(":")[-1]
        return self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]

    def receive(self, url: str, max_n: int, wait: int) -> list[dict]:
        resp = self.client("sqs").receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=max(1, min(10, max_n)),
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return resp.get("Messages") or []

    def delete_messages(self, url: str, messages: list[dict]) -> None:
        sqs = self.client("sqs")
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)
            ])

    def release_messages(self, url: str, messages: list[dict], delay: int) -> None:
        sqs = self.client("sqs")
        for i in range(0, len(messages), 10):
            chunk = messages[i:i + 10]
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": delay}
                for n, m in enumerate(chunk)
            ])

    def start_sqs(self, spec: EventSpec) -> None:
        arn = str(spec.props.get("Queue") or "")
        if not arn.startswith("arn:"):
            self.log(f"pump: {spec.function}/{spec.name}: SQS Queue {arn!r} is not an ARN (skipped)")
            return
        batch_size = int(spec.props.get("BatchSize") or 10)
        window = float(spec.props.get("MaximumBatchingWindowInSeconds") or 0)
        report = "ReportBatchItemFailures" in (spec.props.get("FunctionResponseTypes") or [])
        filters = []
        for f in ((spec.props.get("FilterCriteria") or {}).get("Filters") or []):
            pattern = f.get("Pattern")
            filters.append(json.loads(pattern) if isinstance(pattern, str) else pattern)
        self.log(f"pump: {spec.function} ({spec.binary}) SQS {arn.split(':')[-1]} batch={batch_size}"
                 f"{' partial-failures' if report else ''}{f' filters={len(filters)}' if filters else ''}")

        def loop() -> None:
            url = self.queue_url_from_arn(arn)
            while not self.stop.is_set():
                if not self.wait_for_watch():
                    return
                messages = self.receive(url, batch_size, self.args.poll_wait)
                if not messages:
                    continue
                deadline = time.monotonic() + window
                while len(messages) < batch_size and not self.stop.is_set():
                    more = self.receive(url, batch_size - len(messages), 0)
                    if more:
                        messages.extend(more)
                    elif time.monotonic() >= deadline:
                        break
                    else:
                        self.stop.wait(min(0.2, max(0.0, deadline - time.monotonic())))
                self.deliver_sqs(spec, url, arn, messages, report, filters)

        self.spawn(f"{spec.function}/{spec.name}", loop)

    def deliver_sqs(self, spec: EventSpec, url: str, arn: str, messages: list[dict], report: bool,
                    filters: list[dict]) -> None:
        records = [sqs_record(m, arn, self.args.region) for m in messages]
        if filters:
            keep, drop = [], []
            for m, r in zip(messages, records):
                view = dict(r)
                try:
                    view["body"] = json.loads(r["body"])
                except ValueError:
                    pass
                (keep if any(pattern_matches(p, view) for p in filters) else drop).append((m, r))
            if drop:
                # Lambda deletes the messages its filter criteria do not match.
                self.delete_messages(url, [m for m, _ in drop])
                self.log(f"{spec.function} ({spec.binary}) sqs filtered out n={len(drop)} (deleted)")
            messages, records = [m for m, _ in keep], [r for _, r in keep]
            if not records:
                return
        started = time.monotonic()
        ok, response, detail = self.invoker.invoke(spec.binary, {"Records": records})
        if not ok:
            self.release_messages(url, messages, self.args.retry_visibility)
            self.delivery(spec, "sqs", len(records), False, f"{detail} (batch returned to the queue)", started)
            return
        failed_ids: set[str] = set()
        if report and isinstance(response, dict) and response.get("batchItemFailures"):
            ids = {m["MessageId"] for m in messages}
            for item in response["batchItemFailures"]:
                ident = (item or {}).get("itemIdentifier")
                if not ident or ident not in ids:
                    # Lambda treats an unknown or empty itemIdentifier as a failure of the whole batch.
                    failed_ids = set(ids)
                    break
                failed_ids.add(ident)
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        if done:
            self.delete_messages(url, done)
        if failed:
            self.release_messages(url, failed, self.args.retry_visibility)
            detail = f"{len(failed)} item failure(s) returned to the queue"
        self.delivery(spec, "sqs", len(records), True, detail, started)

    # -- forwarding queues (EventBridge, S3) ---------------------------------------------------

    def ensure_pump_queue(self, name: str) -> tuple[str, str]:
        # One thread polls each pump queue, so a long invocation (a first compile) cannot cause a
        # second delivery; a short visibility lets a restarted pump pick up an in-flight event soon.
        url, _ = self.stack.ensure_queue(name, {"VisibilityTimeout": "60"})
        arn = self.stack.queue_arn(url)
        if self.args.cleanup:
            self.cleanup_actions.append(lambda: self.stack.delete_queue(name))
        return url, arn

    def forward_loop(self, spec_for: Callable[[dict], EventSpec | None], url: str, kind: str,
                     to_payload: Callable[[dict, EventSpec], Any]) -> Callable[[], None]:
        def loop() -> None:
            while not self.stop.is_set():
                if not self.wait_for_watch():
                    return
                for m in self.receive(url, 10, self.args.poll_wait):
                    if self.stop.is_set():
                        return
                    try:
                        body = json.loads(m.get("Body") or "null")
                    except ValueError:
                        body = None
                    spec = spec_for(body) if isinstance(body, dict) else None
                    if spec is None:
                        self.delete_messages(url, [m])
                        continue
                    started = time.monotonic()
                    try:
                        payload = to_payload(body, spec)
                    except Exception as e:  # noqa: BLE001 - a bad event must not stop the loop
                        self.delete_messages(url, [m])
                        self.delivery(spec, kind, 1, False, f"cannot build the event ({e}); dropped", started)
                        continue
                    ok, _, detail = self.invoker.invoke(spec.binary, payload)
                    attempt = int((m.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
                    if ok:
                        self.delete_messages(url, [m])
                    elif attempt >= ASYNC_ATTEMPTS:
                        self.delete_messages(url, [m])
                        detail += f" (attempt {attempt}/{ASYNC_ATTEMPTS}; dropped)"
                    else:
                        self.release_messages(url, [m], self.args.retry_visibility)
                        detail += f" (attempt {attempt}/{ASYNC_ATTEMPTS}; will retry)"
                    self.delivery(spec, kind, 1, ok, detail, started)

        return loop

    # -- EventBridge rules ---------------------------------------------------------------------

    def start_rule(self, spec: EventSpec) -> None:
        pattern = spec.props.get("Pattern")
        if not pattern:
            self.log(f"pump: {spec.function}/{spec.name}: {spec.kind} without a Pattern (skipped)")
            return
        if spec.props.get("InputTransformer"):
            self.log(f"pump: {spec.function}/{spec.name}: InputTransformer is not applied locally (full event delivered)")
        bus = str(spec.props.get("EventBusName") or "default").split("/")[-1]
        rule = rule_name_for(self.tpl, spec)
        url, arn = self.ensure_pump_queue(pump_queue_name(rule))
        self.stack.ensure_bus(bus)
        self.stack.put_rule(rule, bus, pattern, [{"Id": "local-pump", "Arn": arn}])
        if self.args.cleanup:
            self.cleanup_actions.append(lambda: self.stack.delete_rule(rule, bus))
        self.log(f"pump: {spec.function} ({spec.binary}) {spec.kind} rule {rule} on bus {bus}")
        raw_input, input_path = spec.props.get("Input"), spec.props.get("InputPath")

        def to_payload(event: dict, _spec: EventSpec) -> Any:
            event.setdefault("account", self.tpl.account)  # moto leaves it out
            if raw_input is not None:
                return json.loads(raw_input) if isinstance(raw_input, str) else raw_input
            if input_path:
                return json_path(event, str(input_path))
            return event

        self.spawn(f"{spec.function}/{spec.name}", self.forward_loop(lambda _b: spec, url, "eventbridge", to_payload))

    # -- S3 ------------------------------------------------------------------------------------

    def start_s3(self, bucket: str, specs: list[EventSpec]) -> None:
        s3 = self.client("s3")
        self.stack.ensure_bucket(bucket)
        configs = []
        routes: list[tuple[str, EventSpec]] = []
        for spec in specs:
            events = spec.props.get("Events") or ["s3:ObjectCreated:*"]
            events = [events] if isinstance(events, str) else list(events)
            url, arn = self.ensure_pump_queue(pump_queue_name("s3", bucket, spec.function, spec.name))
            config_id = st.sanitize_name(f"pump-{spec.function}-{spec.name}", 64)
            config: dict[str, Any] = {"Id": config_id, "QueueArn": arn, "Events": events}
            rules = (((spec.props.get("Filter") or {}).get("S3Key") or {}).get("Rules")) or []
            if rules:
                config["Filter"] = {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}
            configs.append(config)
            routes.append((url, spec))
            self.log(f"pump: {spec.function} ({spec.binary}) S3 {bucket} {','.join(events)}"
                     f"{' filter=' + json.dumps(config['Filter']) if 'Filter' in config else ''}")
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
        current.pop("ResponseMetadata", None)
        kept = [c for c in current.get("QueueConfigurations") or [] if not str(c.get("Id", "")).startswith("pump-")]
        current["QueueConfigurations"] = kept + configs
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
        if self.args.cleanup:
            def unhook() -> None:
                cur = s3.get_bucket_notification_configuration(Bucket=bucket)
                cur.pop("ResponseMetadata", None)
                cur["QueueConfigurations"] = [c for c in cur.get("QueueConfigurations") or []
                                              if not str(c.get("Id", "")).startswith("pump-")]
                s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=cur)
            self.cleanup_actions.insert(0, unhook)

        def to_payload(body: dict, _spec: EventSpec) -> Any:
            return {"Records": [normalize_s3_record(r, self.tpl.account) for r in body.get("Records") or []]}

        for url, spec in routes:
            def spec_for(body: dict, spec: EventSpec = spec) -> EventSpec | None:
                if body.get("Event") == "s3:TestEvent" or not body.get("Records"):
                    return None  # the test event S3 sends when a configuration is set
                return spec

            self.spawn(f"{spec.function}/{spec.name}", self.forward_loop(spec_for, url, "s3", to_payload))

    # -- lifecycle -----------------------------------------------------------------------------

    def shutdown(self, grace: float = 5.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + grace
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for action in self.cleanup_actions:
            try:
                action()
            except Exception as e:  # noqa: BLE001
                self.log(f"pump: cleanup: {e}")


def sqs_record(m: dict, arn: str, region: str) -> dict:
    """The Lambda SQS event record for a message as ReceiveMessage returns it (boto3 shape)."""
    attrs = m.get("Attributes") or {}
    keys = ["ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
            "SequenceNumber", "MessageGroupId", "MessageDeduplicationId", "AWSTraceHeader",
            "DeadLetterQueueSourceArn"]
    record: dict[str, Any] = {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m.get("Body", ""),
        "attributes": {k: str(attrs[k]) for k in keys if k in attrs},
        "messageAttributes": {},
        "md5OfBody": m.get("MD5OfBody"),
    }
    for name, a in (m.get("MessageAttributes") or {}).items():
        item: dict[str, Any] = {}
        if "StringValue" in a:
            item["stringValue"] = a["StringValue"]
        if "BinaryValue" in a:
            raw = a["BinaryValue"]
            item["binaryValue"] = base64.b64encode(raw if isinstance(raw, bytes) else str(raw).encode()).decode()
        item["stringListValues"] = list(a.get("StringListValues") or [])
        item["binaryListValues"] = [base64.b64encode(b).decode() for b in a.get("BinaryListValues") or []]
        item["dataType"] = a.get("DataType", "String")
        record["messageAttributes"][name] = item
    if m.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = m["MD5OfMessageAttributes"]
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = arn
    record["awsRegion"] = region
    return record


def normalize_s3_record(record: dict, account: str) -> dict:
    """Fill in what AWS sends and moto leaves out, so the record parses as an S3 event record:
    eventTime in RFC 3339 with Z, userIdentity, requestParameters, responseElements, the bucket's
    ownerIdentity and the object's sequencer. The (URL-encoded) key is left as it is."""
    r = dict(record)
    t = r.get("eventTime")
    if isinstance(t, str) and not re.search(r"(Z|[+-]\d\d:?\d\d)$", t):
        try:
            r["eventTime"] = rfc3339(datetime.fromisoformat(t).replace(tzinfo=timezone.utc), millis=True)
        except ValueError:
            r["eventTime"] = rfc3339(utcnow(), millis=True)
    elif not t:
        r["eventTime"] = rfc3339(utcnow(), millis=True)
    r.setdefault("eventVersion", "2.1")
    r.setdefault("eventSource", "aws:s3")
    r.setdefault("userIdentity", {"principalId": f"AWS:{account}:local"})
    r.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    r.setdefault("responseElements", {
        "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
        "x-amz-id-2": base64.b64encode(os.urandom(48)).decode(),
    })
    s3 = dict(r.get("s3") or {})
    bucket = dict(s3.get("bucket") or {})
    bucket.setdefault("ownerIdentity", {"principalId": account})
    s3["bucket"] = bucket
    obj = dict(s3.get("object") or {})
    obj.setdefault("sequencer", f"{time.time_ns():016X}"[-16:])
    s3["object"] = obj
    r["s3"] = s3
    return r


# ============================================================================================
# main
# ============================================================================================

def wait_for_endpoint(endpoint: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(endpoint.rstrip("/") + "/moto-api/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # something answers HTTP: good enough, boto3 will tell the rest
        except (urllib.error.URLError, OSError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default="template.yaml")
    parser.add_argument("--stack-name", default=os.environ.get("LOCAL_STACK_NAME", st.DEFAULT_STACK_NAME))
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", st.DEFAULT_ENDPOINT))
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", st.DEFAULT_REGION))
    parser.add_argument("--invoke-url", default="http://127.0.0.1:9000", help="cargo lambda watch")
    parser.add_argument("--invoke-timeout", type=float, default=900.0,
                        help="seconds to wait for one invocation (the first one may compile the function)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every schedule period by this")
    parser.add_argument("--poll-wait", type=int, default=2, help="SQS long-poll seconds")
    parser.add_argument("--retry-visibility", type=int, default=1,
                        help="seconds before a failed message or event is delivered again")
    parser.add_argument("--only", nargs="*", help="only these functions (logical id or binary)")
    parser.add_argument("--parameter-overrides", action="append", metavar="KEY=VALUE")
    parser.add_argument("--cleanup", action="store_true",
                        help="on exit, delete the pump's own queues, rules and bucket notifications")
    parser.add_argument("--list", action="store_true", help="print what would be driven and exit")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")

    if not os.path.exists(args.template):
        print(f"pump: {args.template} not found; nothing to drive", flush=True)
        return 0

    needs_aws = not args.list
    if needs_aws and not wait_for_endpoint(args.endpoint, 30):
        print(f"pump: the AWS endpoint {args.endpoint} does not answer (is the moto server up? local/up starts it)",
              file=sys.stderr, flush=True)
        return 1
    account = st.endpoint_account(args.endpoint, args.region) if needs_aws else st.DEFAULT_ACCOUNT
    tpl = st.Template.from_file(args.template, stack_name=args.stack_name, region=args.region, account=account,
                                endpoint=args.endpoint,
                                parameters=st.parse_parameter_overrides(args.parameter_overrides))
    specs = discover(tpl, args.only, log=lambda line: print(line, flush=True))
    if args.list:
        for s in specs:
            print(json.dumps({"function": s.function, "binary": s.binary, "event": s.name, "type": s.kind,
                              "properties": s.props}, default=str))
        return 0
    if not specs:
        print(f"pump: {args.template} has no Schedule/SQS/EventBridge/S3 events; idle", flush=True)

    pump = Pump(args, tpl, specs)

    def on_signal(signum, _frame) -> None:
        pump.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        pump.start()
    except Exception as e:  # noqa: BLE001
        pump.log(f"pump: setup failed: {type(e).__name__}: {e}")
        pump.shutdown()
        return 1
    pump.log(f"pump: running ({len(pump.threads)} source(s); invoking {args.invoke_url})")
    while not pump.stop.wait(1):
        pass
    pump.log("pump: stopping")
    pump.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
