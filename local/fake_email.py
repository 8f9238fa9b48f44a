#!/usr/bin/env python3
"""A local fake of the SendGrid and Mailgun send APIs, with their signed event webhooks, so the
whole email loop (send -> provider -> events -> portal) runs on one machine.

    python3 local/fake_email.py [--host 127.0.0.1] [--port 8425]
                                [--store local/.state/fake_email.sqlite3] [--delay 1.0]

One file on purpose (over 800 lines): local/up starts it as one process with the standard library
and `cryptography` only, like the other local servers here; its parts (the two providers' wire
formats, the event planner, the poster, the pages) only make sense together.

Provider APIs (point the portal at them with CONNECTOR_BASE_URLS=sendgrid=URL,mailgun=URL):
- SendGrid: POST /v3/mail/send (`Authorization: Bearer SG.…`; 401 otherwise), validated as
  SendGrid does for the basics (1..1,000 personalizations, at most 1,000 recipients, each address
  valid and once, from, subject, content in SendGrid's order; 400 with SendGrid's
  `{"errors":[{"message","field","help"}]}`), substitutions applied per personalization, one
  message recorded per recipient, 202 with an empty body and `X-Message-Id`
  (`mail_settings.sandbox_mode.enable`: 200, nothing recorded, as SendGrid). GET /v3/scopes, GET
  /v3/user/webhooks/event/settings/signed (the verification key, as SendGrid serves it).
- Mailgun: POST /v3/{domain}/messages (HTTP Basic `api:<any key>`; 401 `Forbidden` otherwise),
  form-urlencoded or multipart: from, to (repeated or comma-separated), cc, bcc, subject, text,
  html, recipient-variables (then one message per `to`, `%recipient.x%` substituted in the
  subject, parts, `h:` headers and `v:` variables: batch sending), `v:*`, `h:*`, `o:*`;
  200 `{"id": "<…@domain>", "message": "Queued. Thank you."}`. GET /v3/domains/{domain}.

Mail you can see: GET / (newest first), GET /messages/{id} (headers, text part, the HTML part in
a sandboxed iframe, the events and every post of them with the portal's answer),
GET /api/messages?to=&provider=&limit= and GET /api/messages/{id} (JSON), DELETE /api/messages.

Events come back, signed, to the URLs registered with POST /_fake/webhooks
`{"provider": "sendgrid", "url": …}` or `{"provider": "mailgun", "url": …, "signing_key": …}`
(optional `api_key` (SendGrid) or `domain` (Mailgun): only mail sent with that key or domain goes
there). SendGrid: JSON arrays (CRLF between events, as SendGrid), ECDSA P-256/SHA-256 over
timestamp + raw body, headers X-Twilio-Email-Event-Webhook-Signature/-Timestamp, the key pair
made once beside the store, its public key (base64 DER SPKI) at GET /_fake/sendgrid/public-key.
Mailgun: one JSON POST per event, `signature` = hex HMAC-SHA256(signing key, timestamp + token).
Delivery events are posted --delay seconds after the send, engagement events (open, click,
spam report) --delay later; a connection error, a 429 or a 5xx is retried with backoff
(--attempts, --backoff), every post's answer is recorded and shown. A message sent while no
webhook of its provider is registered is recorded with no events posted (POST
/messages/{id}/redeliver posts them later).

What happens to a message: see RULES (the address's `+tag`s, e.g. ann+click@example.com).

Faults for the sender's retry and throttling paths: POST /_fake/faults `{"provider", "status":
429|401|403|500|503, "count": 1, "retry_after": 1, "message"?}`: the next `count` sends of that
provider answer so (SendGrid 429: X-RateLimit-Limit/-Remaining/-Reset; Mailgun 429:
Retry-After). GET lists, DELETE clears them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import hmac
import html
import http.client
import itertools
import json
import os
import re
import secrets
import socket
import sqlite3
import sys
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from email.utils import formataddr, formatdate, getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 30 * 1024 * 1024  # SendGrid's and Mailgun's message size limit
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
EVENTS_PER_POST = 1000  # SendGrid batches events; the fake posts at most this many at once
STORED_BODY_BYTES = 64 * 1024  # of each post's body, kept for the message page
STORED_ANSWER_CHARS = 2000  # of the portal's answer to each post

SG_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SG_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
SG_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
SG_AUTH_ERROR = "The provided authorization grant is invalid, expired, or revoked"
USER_AGENT_SG = "SendGrid Event API"
USER_AGENT_MG = "mailgun/treq-16.12.0"
OPEN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
OPEN_IP = "203.0.113.7"  # TEST-NET-3

# What happens to a message, by the `+tag`s of its recipient's local part (any order, any case;
# ann+open+spam@example.com opens and complains). Every message is first processed (SendGrid) /
# accepted (Mailgun).
RULES = [
    ("(none)", "delivered", "processed, delivered", "accepted, delivered"),
    ("+bounce", "hard bounce, never delivered",
     "processed, bounce (type bounce, status 5.1.1)",
     "accepted, failed (severity permanent, reason bounce, code 550)"),
    ("+soft", "soft bounce: deferred, then given up",
     "processed, deferred, bounce (type blocked, status 4.2.2)",
     "accepted, failed (temporary, 452), failed (permanent, reason old, 452)"),
    ("+drop", "dropped: a previously bounced address",
     "processed, dropped (Bounced Address)",
     "accepted, failed (permanent, reason suppress-bounce, 605)"),
    ("+open", "delivered and opened (unless open tracking is off)", "… open", "… opened"),
    ("+click", "delivered, opened, first http(s) link of the HTML clicked (unless tracking is off)",
     "… open, click", "… opened, clicked"),
    ("+spam", "delivered, then reported as spam", "… spamreport", "… complained"),
    ("+unsubscribe", "delivered, then the recipient's mailbox does the RFC 8058 one-click POST "
     "(List-Unsubscribe=One-Click) to the message's List-Unsubscribe http(s) URL", "…", "…"),
]
FAILURE_TAGS = ("bounce", "soft", "drop")


def now() -> float:
    return time.time()


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def b64url_id(nbytes: int = 16) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode().rstrip("=")


EMAIL_RE = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def valid_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 320 and EMAIL_RE.match(value.strip()) is not None


def address_tags(address: str) -> set[str]:
    local = address.split("@", 1)[0].lower()
    return set(local.split("+")[1:])


LINK_RE = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)


def first_link(html_part: str) -> str | None:
    """The first http(s) link of an HTML part (what a `+click` recipient clicks)."""
    for m in LINK_RE.finditer(html_part or ""):
        href = html.unescape(m.group(1) or m.group(2) or m.group(3) or "").strip()
        if re.match(r"https?://", href, re.I):
            return href
    return None


def one_click_url(headers: list[list[str]]) -> str | None:
    """The http(s) URL of List-Unsubscribe, when List-Unsubscribe-Post asks for one-click."""
    values = {k.lower(): v for k, v in headers}
    if "list-unsubscribe=one-click" not in values.get("list-unsubscribe-post", "").replace(" ", "").lower():
        return None
    for url in re.findall(r"<([^>]+)>", values.get("list-unsubscribe", "")):
        if re.match(r"https?://", url.strip(), re.I):
            return url.strip()
    return None


def substitute(text: str, values: dict[str, str]) -> str:
    """SendGrid substitutions: every key replaced by its value in one pass (a value holding a key
    is not substituted again)."""
    if not text or not values:
        return text
    keys = sorted((k for k in values if k), key=len, reverse=True)
    if not keys:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in keys))
    return pattern.sub(lambda m: values[m.group(0)], text)


RECIPIENT_VAR = re.compile(r"%recipient\.([A-Za-z0-9_.\-]+)%")


def recipient_substitute(text: str, variables: dict) -> str:
    """Mailgun batch sending: `%recipient.name%` becomes the recipient's variable; an unknown one
    is left as it is (visible on the message page)."""
    if not text or "%recipient." not in text:
        return text

    def value(m: re.Match) -> str:
        if m.group(1) not in variables:
            return m.group(0)
        v = variables[m.group(1)]
        return v if isinstance(v, str) else json.dumps(v)

    return RECIPIENT_VAR.sub(value, text)


# ================================================================================================
# the store
# ================================================================================================

SCHEMA = """
create table if not exists messages (
  n integer primary key autoincrement,
  id text not null unique,
  created_at real not null,
  provider text not null,
  request_id text not null,            -- X-Message-Id / the Mailgun id, without <>
  provider_message_id text not null,   -- sg_message_id / the Mailgun message-id
  account text not null,               -- SendGrid: sha256 of the API key; Mailgun: the domain
  recipient text not null,
  mail_from text not null,
  subject text not null,
  text_part text not null,
  html_part text not null,
  headers text not null,               -- JSON [[name, value], ...]
  variables text not null,             -- JSON: SendGrid custom_args / Mailgun user-variables
  tags text not null,                  -- JSON: SendGrid categories / Mailgun o:tag
  options text not null                -- JSON: tracking, template, attachments, one-click URL, ...
);
create index if not exists messages_recipient on messages (lower(recipient));
create table if not exists events (
  message_id text not null,
  seq integer not null,
  phase integer not null,              -- 1 delivery, 2 engagement
  event text not null,
  payload text not null,               -- the SendGrid event / the Mailgun event-data
  primary key (message_id, seq)
);
create table if not exists deliveries (
  id integer primary key autoincrement,
  at real not null,
  kind text not null,                  -- sendgrid | mailgun | one-click
  url text not null,
  events text not null,                -- JSON [[message_id, event], ...]
  attempt integer not null,
  status integer,                      -- the answer's status; null: no answer
  answer text not null,
  error text not null,
  body text not null
);
create table if not exists delivery_messages (
  delivery_id integer not null,
  message_id text not null
);
create index if not exists delivery_messages_message on delivery_messages (message_id);
create table if not exists webhooks (
  provider text not null,
  url text not null,
  signing_key text not null,
  account text not null,               -- '' (all mail of the provider) or as messages.account
  account_label text not null,
  created_at real not null,
  primary key (provider, url)
);
"""


def key_account(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:24]


class Store:
    """One SQLite connection behind one lock: the fake's load is a developer's laptop."""

    def __init__(self, path: str):
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma busy_timeout=5000")
        self.db.executescript(SCHEMA)

    def q(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def add_messages(self, messages: list[dict], events: list[tuple]) -> None:
        with self.lock:
            self.db.execute("begin")
            try:
                self.db.executemany(
                    "insert into messages (id, created_at, provider, request_id, provider_message_id, account,"
                    " recipient, mail_from, subject, text_part, html_part, headers, variables, tags, options)"
                    " values (:id, :created_at, :provider, :request_id, :provider_message_id, :account, :recipient,"
                    " :mail_from, :subject, :text_part, :html_part, :headers, :variables, :tags, :options)",
                    [{**m, "headers": json.dumps(m["headers"]), "variables": json.dumps(m["variables"]),
                      "tags": json.dumps(m["tags"]), "options": json.dumps(m["options"])} for m in messages])
                self.db.executemany(
                    "insert into events (message_id, seq, phase, event, payload) values (?, ?, ?, ?, ?)",
                    [(mid, seq, phase, ev, json.dumps(payload)) for mid, seq, phase, ev, payload in events])
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise

    def existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self.q(f"select id from messages where id in ({','.join('?' * len(chunk))})", chunk)
            found.update(r["id"] for r in rows)
        return found

    def record_delivery(self, kind: str, url: str, covers: list[tuple[str, str]], attempt: int,
                        status: int | None, answer: str, error: str, body: bytes) -> None:
        with self.lock:
            self.db.execute("begin")
            try:
                cur = self.db.execute(
                    "insert into deliveries (at, kind, url, events, attempt, status, answer, error, body)"
                    " values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now(), kind, url, json.dumps(covers), attempt, status, answer[:STORED_ANSWER_CHARS], error,
                     body[:STORED_BODY_BYTES].decode("utf-8", "replace")))
                self.db.executemany("insert into delivery_messages (delivery_id, message_id) values (?, ?)",
                                    [(cur.lastrowid, mid) for mid in sorted({m for m, _ in covers})])
                self.db.execute("commit")
            except BaseException:
                self.db.execute("rollback")
                raise

    def clear(self) -> int:
        with self.lock:
            n = self.db.execute("select count(*) from messages").fetchone()[0]
            self.db.execute("begin")
            for table in ("messages", "events", "deliveries", "delivery_messages"):
                self.db.execute(f"delete from {table}")
            self.db.execute("commit")
            return n

    def webhooks(self, provider: str | None = None, account: str | None = None) -> list[sqlite3.Row]:
        if provider is None:
            return self.q("select * from webhooks order by provider, created_at")
        return self.q("select * from webhooks where provider = ? and (account = '' or account = ?) order by created_at",
                      (provider, account or ""))


def message_json(store: Store, row: sqlite3.Row, base_url: str, full: bool = True) -> dict:
    headers = json.loads(row["headers"])
    out = {
        "id": row["id"],
        "created_at": iso(row["created_at"]),
        "provider": row["provider"],
        "request_id": row["request_id"],
        "provider_message_id": row["provider_message_id"],
        "to": row["recipient"],
        "from": row["mail_from"],
        "subject": row["subject"],
        "our_message_id": json.loads(row["variables"]).get("message_id"),
        "variables": json.loads(row["variables"]),
        "tags": json.loads(row["tags"]),
        "headers": {k: v for k, v in headers},
        "header_list": headers,
        "page": f"{base_url}/messages/{row['id']}",
    }
    if full:
        out["text"] = row["text_part"]
        out["html"] = row["html_part"]
        out["options"] = json.loads(row["options"])
        out["events"] = [{"phase": e["phase"], "event": e["event"], "payload": json.loads(e["payload"])}
                         for e in store.q("select * from events where message_id = ? order by seq", (row["id"],))]
        out["deliveries"] = [delivery_json(d, row["id"]) for d in deliveries_of(store, row["id"])]
    return out


def deliveries_of(store: Store, message_id: str) -> list[sqlite3.Row]:
    return store.q("select d.* from deliveries d join delivery_messages dm on dm.delivery_id = d.id"
                   " where dm.message_id = ? order by d.id", (message_id,))


def delivery_json(d: sqlite3.Row, message_id: str | None = None) -> dict:
    covers = json.loads(d["events"])
    return {
        "at": iso(d["at"]), "kind": d["kind"], "url": d["url"], "attempt": d["attempt"], "status": d["status"],
        "answer": d["answer"], "error": d["error"],
        "events": [ev for mid, ev in covers if message_id is None or mid == message_id],
        "events_in_post": len(covers),
    }


# ================================================================================================
# SendGrid: POST /v3/mail/send
# ================================================================================================

class Refusal(Exception):
    def __init__(self, status: int, payload, content_type: str = "application/json", headers: dict | None = None):
        super().__init__(status)
        self.status, self.payload, self.content_type, self.headers = status, payload, content_type, headers or {}


def sg_error(message: str, field_name: str | None = None, help_anchor: str | None = None) -> dict:
    return {"message": message, "field": field_name, "help": SG_HELP + help_anchor if help_anchor else None}


def sg_mailbox(value) -> str:
    return formataddr((value.get("name") or "", value["email"].strip()))


def sendgrid_validate(data) -> list[dict]:
    if not isinstance(data, dict):
        return [sg_error("Bad Request")]
    errors: list[dict] = []
    ps = data.get("personalizations")
    if not isinstance(ps, list) or not ps:
        errors.append(sg_error("The personalizations field is required and must have at least one personalization.",
                               "personalizations", "personalizations"))
    elif len(ps) > MAX_PERSONALIZATIONS:
        errors.append(sg_error(
            f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations per API request. "
            f"You have provided {len(ps)} personalizations. Please consider splitting this into multiple "
            "requests and resending your request.", "personalizations", "personalizations"))
    else:
        seen: set[str] = set()
        total = 0
        for i, p in enumerate(ps):
            if not isinstance(p, dict):
                errors.append(sg_error("Invalid type. Expected: object.", f"personalizations.{i}", "personalizations"))
                continue
            if not isinstance(p.get("to"), list) or not p["to"]:
                errors.append(sg_error("The to array is required for all personalization objects, and must have at "
                                       "least one email object with a valid email address.",
                                       f"personalizations.{i}.to", "personalizations.to"))
            for kind in ("to", "cc", "bcc"):
                lst = p.get(kind)
                if lst is None or (kind == "to" and not isinstance(lst, list)):
                    continue
                if not isinstance(lst, list):
                    errors.append(sg_error("Invalid type. Expected: array.", f"personalizations.{i}.{kind}",
                                           f"personalizations.{kind}"))
                    continue
                for j, a in enumerate(lst):
                    email = a.get("email") if isinstance(a, dict) else None
                    total += 1
                    if not valid_email(email):
                        errors.append(sg_error("Does not contain a valid address.",
                                               f"personalizations.{i}.{kind}.{j}.email", f"personalizations.{kind}"))
                        continue
                    low = email.strip().lower()
                    if low in seen:
                        errors.append(sg_error(
                            "Each email address in the personalization block should be unique between to, cc, and "
                            f"bcc. We found the first duplicate instance of [{email.strip()}] in the "
                            f"personalizations.{i}.{kind} field.", f"personalizations.{i}", "personalizations"))
                    seen.add(low)
            for name in ("substitutions", "headers", "custom_args"):
                value = p.get(name)
                if value is None:
                    continue
                if not isinstance(value, dict):
                    errors.append(sg_error("Invalid type. Expected: object.", f"personalizations.{i}.{name}",
                                           f"personalizations.{name}"))
                    continue
                for k, v in value.items():
                    if not isinstance(v, str):
                        errors.append(sg_error(f"Invalid type. Expected: string, given: {type(v).__name__}.",
                                               f"personalizations.{i}.{name}.{k}", f"personalizations.{name}"))
        if total > MAX_RECIPIENTS:
            errors.append(sg_error(f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                                   "request.", "personalizations", "personalizations"))
    sender = data.get("from")
    if not isinstance(sender, dict) or not valid_email(sender.get("email")):
        errors.append(sg_error(
            "The from object must be provided for every email send. It is an object that requires the email "
            "parameter, but may also contain a name parameter.  e.g. {\"email\" : \"example@example.com\"}  or "
            "{\"email\" : \"example@example.com\", \"name\" : \"Example Recipient\"}.", "from.email", "from"))
    reply_to = data.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, dict) or not valid_email(reply_to.get("email"))):
        errors.append(sg_error("The reply_to email does not contain a valid address.", "reply_to.email", "reply_to"))
    template = data.get("template_id")
    every_subject = isinstance(ps, list) and ps and all(isinstance(p, dict) and p.get("subject") for p in ps)
    if not template and not every_subject and not (isinstance(data.get("subject"), str) and data["subject"]):
        errors.append(sg_error("The subject is required. You can get around this requirement if you use a template "
                               "with a subject defined or if every personalization has a subject defined.",
                               "subject", "subject"))
    content = data.get("content")
    if not template and (not isinstance(content, list) or not content):
        errors.append(sg_error("Unless a valid template_id is provided, the content parameter is required. There "
                               "must be at least one defined content block. We typically suggest both text/plain "
                               "and text/html blocks are included, but only one block is required.",
                               "content", "content"))
    elif isinstance(content, list):
        types = []
        for i, c in enumerate(content):
            if not isinstance(c, dict) or not isinstance(c.get("type"), str) or not c["type"]:
                errors.append(sg_error("The content type must be a string at least one character in length.",
                                       f"content.{i}.type", "content.type"))
                continue
            if not isinstance(c.get("value"), str) or not c["value"]:
                errors.append(sg_error("The content value must be a string at least one character in length.",
                                       f"content.{i}.value", "content.value"))
            types.append(c["type"].lower())
        rank = {"text/plain": 0, "text/html": 1}
        order = [rank.get(t, 2) for t in types]
        if order != sorted(order):
            errors.append(sg_error("If present, text/plain content must be first, followed by text/html, followed "
                                   "by any other content.", "content", "content"))
    for name in ("headers", "custom_args"):
        value = data.get(name)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
            errors.append(sg_error("Invalid type. Expected: object of strings.", name, name))
    categories = data.get("categories")
    if categories is not None and (not isinstance(categories, list) or len(categories) > 10
                                   or not all(isinstance(c, str) for c in categories)):
        errors.append(sg_error("The categories parameter must be an array of at most 10 strings.", "categories",
                               "categories"))
    return errors


def sendgrid_messages(data: dict, account: str) -> tuple[str, list[dict]]:
    """One message per recipient of a validated body, and the request's X-Message-Id."""
    request_id = b64url_id()
    t0 = now()
    content = data.get("content") or []
    text_tpl = next((c["value"] for c in content if c["type"].lower() == "text/plain"), "")
    html_tpl = next((c["value"] for c in content if c["type"].lower() == "text/html"), "")
    tracking = data.get("tracking_settings") or {}
    opens = (tracking.get("open_tracking") or {}).get("enable", True) is not False
    clicks = (tracking.get("click_tracking") or {}).get("enable", True) is not False
    categories = list(data.get("categories") or [])
    messages = []
    k = 0
    for p in data["personalizations"]:
        subs = p.get("substitutions") or {}
        sender = p.get("from") if isinstance(p.get("from"), dict) and valid_email(p["from"].get("email")) else data["from"]
        subject = substitute(p.get("subject") or data.get("subject") or "", subs)
        text_part = substitute(text_tpl, subs)
        html_part = substitute(html_tpl, subs)
        custom = {**(data.get("custom_args") or {}), **(p.get("custom_args") or {})}
        extra = {**(data.get("headers") or {}), **(p.get("headers") or {})}
        tos = [sg_mailbox(a) for a in p["to"]]
        ccs = [sg_mailbox(a) for a in p.get("cc") or []]
        headers = [["From", sg_mailbox(sender)], ["To", ", ".join(tos)]]
        if ccs:
            headers.append(["Cc", ", ".join(ccs)])
        if isinstance(data.get("reply_to"), dict):
            headers.append(["Reply-To", substitute(sg_mailbox(data["reply_to"]), subs)])
        headers += [["Subject", subject], ["Date", formatdate(t0, usegmt=True)],
                    ["Message-ID", f"<{request_id}@ismtpd0001p1fake.sendgrid.net>"]]
        headers += [[k2, v] for k2, v in extra.items()]
        recipients = [a["email"].strip() for kind in ("to", "cc", "bcc") for a in p.get(kind) or []]
        for email in recipients:
            options = {
                "open_tracking": opens, "click_tracking": clicks,
                "template_id": data.get("template_id"), "send_at": p.get("send_at", data.get("send_at")),
                "one_click_url": one_click_url(headers), "smtp_id": f"<{request_id}@ismtpd0001p1fake.sendgrid.net>",
            }
            if p.get("dynamic_template_data") is not None:
                options["dynamic_template_data"] = p["dynamic_template_data"]
            messages.append({
                "id": secrets.token_hex(8), "created_at": t0, "provider": "sendgrid", "request_id": request_id,
                "provider_message_id": f"{request_id}.filterdrecv-fake-{os.getpid()}-{int(t0):X}-{k}.0",
                "account": account, "recipient": email, "mail_from": sender["email"].strip(), "subject": subject,
                "text_part": text_part, "html_part": html_part, "headers": headers, "variables": custom,
                "tags": categories, "options": options,
            })
            k += 1
    return request_id, messages


# ================================================================================================
# Mailgun: POST /v3/{domain}/messages
# ================================================================================================

def mg_refuse(message: str, status: int = 400) -> Refusal:
    return Refusal(status, {"message": message})


def parse_form(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], list[dict]]:
    """The fields (in order) and attachments of a form-urlencoded or multipart body."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        msg = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
        if not msg.is_multipart():
            raise mg_refuse("malformed multipart body")
        fields, files = [], []
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is None:
                continue
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if filename is not None:
                files.append({"field": name, "filename": filename, "size": len(payload),
                              "content_type": part.get_content_type()})
            else:
                fields.append((name, payload.decode(part.get_content_charset() or "utf-8", "replace")))
        return fields, files
    if ctype in ("application/x-www-form-urlencoded", ""):
        try:
            return urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False), []
        except UnicodeDecodeError:
            raise mg_refuse("the body is not UTF-8") from None
    raise mg_refuse(f"unsupported content type {ctype}")


def mailgun_messages(domain: str, fields: list[tuple[str, str]], files: list[dict]) -> tuple[str, list[dict]]:
    def all_of(name: str) -> list[str]:
        return [v for k, v in fields if k == name]

    def one(name: str) -> str:
        values = all_of(name)
        return values[-1] if values else ""

    sender = one("from").strip()
    if not sender:
        raise mg_refuse("'from' parameter is missing")
    to_values = [v for v in all_of("to") if v.strip()]
    if not to_values:
        raise mg_refuse("'to' parameter is missing")
    tos = getaddresses(to_values)
    ccs = getaddresses([v for v in all_of("cc") if v.strip()])
    bccs = getaddresses([v for v in all_of("bcc") if v.strip()])
    if not all(valid_email(a) for _, a in tos):
        raise mg_refuse("'to' parameter is not a valid address. please check documentation")
    if not all(valid_email(a) for _, a in ccs + bccs):
        raise mg_refuse("'cc' or 'bcc' parameter is not a valid address. please check documentation")
    if len(tos) + len(ccs) + len(bccs) > MAX_RECIPIENTS:
        raise mg_refuse(f"Too many recipients, max is {MAX_RECIPIENTS}")
    if not any(one(n).strip() for n in ("text", "html", "amp-html", "template")):
        raise mg_refuse("Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified")
    batch = any(k == "recipient-variables" for k, _ in fields)
    rvars: dict = {}
    if batch:
        try:
            rvars = json.loads(one("recipient-variables") or "{}")
        except json.JSONDecodeError:
            rvars = None
        if not isinstance(rvars, dict):
            raise mg_refuse("recipient-variables parameter is not a valid JSON")
    sender_email = (getaddresses([sender]) or [("", sender)])[0][1]
    user_vars_tpl = {k[2:]: v for k, v in fields if k.startswith("v:")}
    raw_vars = one("h:X-Mailgun-Variables")
    if raw_vars:
        try:
            extra = json.loads(raw_vars)
            if isinstance(extra, dict):
                user_vars_tpl = {**extra, **user_vars_tpl}
        except json.JSONDecodeError:
            pass
    header_tpl = [[k[2:], v] for k, v in fields if k.startswith("h:") and k != "h:X-Mailgun-Variables"]
    options = {k[2:]: v for k, v in fields if k.startswith("o:") and k != "o:tag"}
    tags = all_of("o:tag")
    yes = ("yes", "true", "htmlonly")
    tracking = options.get("tracking", "yes").lower() in yes
    opens = tracking and options.get("tracking-opens", "yes").lower() in yes
    clicks = tracking and options.get("tracking-clicks", "yes").lower() in yes
    t0 = now()
    request_id = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime(t0))}.{secrets.token_hex(8).upper()}@{domain}"
    everyone = [(n, a, "to") for n, a in tos] + [(n, a, "cc") for n, a in ccs] + [(n, a, "bcc") for n, a in bccs]
    messages = []
    for name, addr, kind in everyone:
        v = rvars.get(addr, rvars.get(addr.lower(), {})) if batch else {}
        v = v if isinstance(v, dict) else {}
        sub = (lambda s, v=v: recipient_substitute(s, v)) if batch else (lambda s: s)
        subject = sub(one("subject"))
        to_header = formataddr((name, addr)) if batch and kind == "to" else ", ".join(formataddr(x) for x in tos)
        headers = [["From", sender], ["To", to_header]]
        if ccs and not batch:
            headers.append(["Cc", ", ".join(formataddr(x) for x in ccs)])
        headers += [["Subject", subject], ["Date", formatdate(t0, usegmt=True)], ["Message-Id", f"<{request_id}>"]]
        headers += [[k, sub(val)] for k, val in header_tpl]
        user_vars = {k: sub(val) if isinstance(val, str) else val for k, val in user_vars_tpl.items()}
        messages.append({
            "id": secrets.token_hex(8), "created_at": t0, "provider": "mailgun", "request_id": request_id,
            "provider_message_id": request_id, "account": domain.lower(), "recipient": addr.strip(),
            "mail_from": sender_email, "subject": subject, "text_part": sub(one("text")),
            "html_part": sub(one("html")), "headers": headers, "variables": user_vars, "tags": tags,
            "options": {"open_tracking": opens, "click_tracking": clicks, "batch": batch, "o": options,
                        "template": one("template") or None, "attachments": files,
                        "one_click_url": one_click_url(headers), "test_mode": options.get("testmode", "").lower() in yes},
        })
    return request_id, messages


# ================================================================================================
# the events of a message (RULES)
# ================================================================================================

def sendgrid_events(m: dict, t1: float, t2: float) -> list[tuple[int, str, dict]]:
    tags = address_tags(m["recipient"])
    cats = m["tags"]

    def ev(event: str, ts: float, **extra) -> dict:
        e = dict(m["variables"])  # custom args ride at the top level; SendGrid's own fields win
        e.update({"email": m["recipient"], "timestamp": int(ts), "smtp-id": m["options"]["smtp_id"],
                  "event": event, "sg_event_id": b64url_id(), "sg_message_id": m["provider_message_id"]})
        if cats:
            e["category"] = cats[0] if len(cats) == 1 else list(cats)
        e.update(extra)
        return e

    out = [(1, "processed", ev("processed", m["created_at"]))]
    if "drop" in tags:
        return out + [(1, "dropped", ev("dropped", t1, reason="Bounced Address", status="5.0.0"))]
    if "bounce" in tags:
        return out + [(1, "bounce", ev("bounce", t1, reason="550 5.1.1 The email account that you tried to reach "
                                       "does not exist.", status="5.1.1", type="bounce"))]
    if "soft" in tags:
        return out + [
            (1, "deferred", ev("deferred", t1, response="452 4.2.2 The email account that you tried to reach is "
                               "over quota. Try again later.", attempt="1")),
            (1, "bounce", ev("bounce", t1, reason="452 4.2.2 The email account that you tried to reach is over "
                             "quota.", status="4.2.2", type="blocked")),
        ]
    out.append((1, "delivered", ev("delivered", t1, response="250 OK")))
    link = first_link(m["html_part"]) if m["options"]["click_tracking"] else None
    if m["options"]["open_tracking"] and ("open" in tags or "click" in tags):
        out.append((2, "open", ev("open", t2, useragent=OPEN_UA, ip=OPEN_IP)))
    if link and "click" in tags:
        out.append((2, "click", ev("click", t2, useragent=OPEN_UA, ip=OPEN_IP, url=link)))
    if "spam" in tags:
        out.append((2, "spamreport", ev("spamreport", t2)))
    return out


def mailgun_events(m: dict, t1: float, t2: float) -> list[tuple[int, str, dict]]:
    tags = address_tags(m["recipient"])
    headers = {k.lower(): v for k, v in m["headers"]}
    domain = m["recipient"].rsplit("@", 1)[-1].lower()
    size = len(m["text_part"].encode()) + len(m["html_part"].encode()) + 512
    key = b64url_id(12)
    test_mode = m["options"].get("test_mode", False)

    def message(full: bool = True) -> dict:
        if not full:  # opened / clicked carry the message-id only
            return {"headers": {"message-id": m["provider_message_id"]}}
        return {"headers": {"to": headers.get("to", m["recipient"]), "message-id": m["provider_message_id"],
                            "from": headers.get("from", m["mail_from"]), "subject": m["subject"]},
                "attachments": [], "size": size}

    def ev(event: str, ts: float, level: str = "info", **extra) -> dict:
        e = {"event": event, "id": b64url_id(), "timestamp": round(ts, 6), "log-level": level}
        e.update(extra)
        e.update({"recipient": m["recipient"], "recipient-domain": domain, "campaigns": [], "tags": list(m["tags"]),
                  "user-variables": dict(m["variables"])})
        return e

    def sending(event: str, ts: float, level: str = "info", **extra) -> dict:
        return ev(event, ts, level,
                  envelope={"transport": "smtp", "sender": m["mail_from"], "sending-ip": "198.51.100.25",
                            "targets": m["recipient"]},
                  flags={"is-routed": False, "is-authenticated": True, "is-system-test": False,
                         "is-test-mode": test_mode},
                  message=message(),
                  storage={"url": f"https://storage-us-west1.api.mailgun.net/v3/domains/{m['account']}/messages/{key}",
                           "key": key},
                  **extra)

    accepted = ev("accepted", m["created_at"], method="HTTP",
                  envelope={"targets": m["recipient"], "transport": "smtp", "sender": m["mail_from"]},
                  flags={"is-authenticated": True, "is-test-mode": test_mode},
                  message={**message(), "recipients": [m["recipient"]]},
                  storage={"url": f"https://storage-us-west1.api.mailgun.net/v3/domains/{m['account']}/messages/{key}",
                           "key": key})
    out = [(1, "accepted", accepted)]
    if "drop" in tags:
        return out + [(1, "failed", sending("failed", t1, "error", severity="permanent", reason="suppress-bounce",
                                            **{"delivery-status": {"attempt-no": 1, "message": "", "code": 605,
                                                                   "description": "Not delivering to previously "
                                                                   "bounced address", "session-seconds": 0.0}}))]
    if "bounce" in tags:
        return out + [(1, "failed", sending("failed", t1, "error", severity="permanent", reason="bounce", **{
            "delivery-status": {"tls": True, "mx-host": f"mx.{domain}", "code": 550, "description": "",
                                "session-seconds": 0.4, "utf8": True, "attempt-no": 1, "enhanced-code": "5.1.1",
                                "message": "5.1.1 The email account that you tried to reach does not exist.",
                                "certificate-verified": True}}))]
    if "soft" in tags:
        status = {"tls": True, "mx-host": f"mx.{domain}", "code": 452, "description": "", "session-seconds": 0.3,
                  "utf8": True, "attempt-no": 1, "enhanced-code": "4.2.2",
                  "message": "4.2.2 The email account that you tried to reach is over quota.",
                  "certificate-verified": True}
        return out + [
            (1, "failed", sending("failed", t1, "warn", severity="temporary", reason="generic",
                                  **{"delivery-status": {**status, "retry-seconds": 600}})),
            (1, "failed", sending("failed", t1, "error", severity="permanent", reason="old",
                                  **{"delivery-status": {**status, "attempt-no": 8, "description": "Too old"}})),
        ]
    out.append((1, "delivered", sending("delivered", t1, **{"delivery-status": {
        "tls": True, "mx-host": f"mx.{domain}", "code": 250, "description": "", "session-seconds": 0.4,
        "utf8": True, "attempt-no": 1, "message": "OK", "certificate-verified": True}})))
    client = {"geolocation": {"country": "US", "region": "CA", "city": "San Francisco"}, "ip": OPEN_IP,
              "client-info": {"client-type": "browser", "client-os": "Linux", "device-type": "desktop",
                              "client-name": "Firefox", "user-agent": OPEN_UA}}
    link = first_link(m["html_part"]) if m["options"]["click_tracking"] else None
    if m["options"]["open_tracking"] and ("open" in tags or "click" in tags):
        out.append((2, "opened", ev("opened", t2, message=message(False), **client)))
    if link and "click" in tags:
        out.append((2, "clicked", ev("clicked", t2, message=message(False), url=link, **client)))
    if "spam" in tags:
        out.append((2, "complained", ev("complained", t2, "warn", flags={"is-test-mode": test_mode},
                                        envelope={"sending-ip": "198.51.100.25"}, message=message())))
    return out


# ================================================================================================
# posting the events
# ================================================================================================

@dataclass
class Post:
    kind: str  # sendgrid | mailgun | one-click
    url: str
    covers: list[tuple[str, str]]  # (message id, event) pairs this post carries
    body: bytes = b""  # SendGrid: the signed body; one-click: the form
    event_data: dict | None = None  # Mailgun: signed anew at each attempt
    signing_key: str = ""


@dataclass
class Job:
    posts: list[Post]
    attempt: int = 1


def sendgrid_body(events: list[dict]) -> bytes:
    """A JSON array with CRLFs between the events and at the end, as SendGrid posts it."""
    parts = [json.dumps(e, separators=(",", ":"), sort_keys=True, ensure_ascii=False) for e in events]
    return ("[" + ",\r\n".join(parts) + "]\r\n").encode("utf-8")


class Poster:
    """Posts jobs when due, from a few worker threads; each job's posts go in order."""

    def __init__(self, app: "App", workers: int):
        self.app = app
        self.heap: list[tuple[float, int, Job]] = []
        self.cond = threading.Condition()
        self.counter = itertools.count()
        self.active = 0
        for i in range(workers):
            threading.Thread(target=self._work, name=f"poster-{i}", daemon=True).start()

    def submit(self, job: Job, due: float) -> None:
        with self.cond:
            heapq.heappush(self.heap, (due, next(self.counter), job))
            self.cond.notify()

    def pending(self) -> int:
        with self.cond:
            return len(self.heap) + self.active

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.heap or self.heap[0][0] > now():
                    self.cond.wait(None if not self.heap else max(0.0, self.heap[0][0] - now()))
                _, _, job = heapq.heappop(self.heap)
                self.active += 1
            try:
                self.app.run_job(job)
            except Exception:  # noqa: BLE001 - a bad job must not stop the worker
                traceback.print_exc()
            finally:
                with self.cond:
                    self.active -= 1


# ================================================================================================
# the application
# ================================================================================================

class App:
    def __init__(self, store_path: str, base_url: str, delay: float, attempts: int, backoff: float,
                 timeout: float, workers: int):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self.base_url = base_url.rstrip("/")
        self.delay, self.attempts, self.backoff, self.timeout = delay, max(1, attempts), backoff, timeout
        os.makedirs(os.path.dirname(os.path.abspath(store_path)) or ".", exist_ok=True)
        self.store = Store(store_path)
        key_path = os.path.join(os.path.dirname(os.path.abspath(store_path)), "fake_email_sendgrid_key.pem")
        if os.path.exists(key_path):
            with open(key_path, "rb") as f:
                self.sg_key = serialization.load_pem_private_key(f.read(), password=None)
        else:
            self.sg_key = ec.generate_private_key(ec.SECP256R1())
            pem = self.sg_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
            fd = os.open(key_path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            os.replace(key_path + ".tmp", key_path)
        self.key_path = key_path
        self.sg_public_key = base64.b64encode(self.sg_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
        self.faults: dict[str, list[dict]] = {"sendgrid": [], "mailgun": []}
        self.faults_lock = threading.Lock()
        self.poster = Poster(self, workers)

    # --- signing ----------------------------------------------------------------------------------

    def sign_sendgrid(self, timestamp: str, body: bytes) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return base64.b64encode(self.sg_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()

    @staticmethod
    def sign_mailgun(signing_key: str, timestamp: str, token: str) -> str:
        return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()

    # --- faults -----------------------------------------------------------------------------------

    def take_fault(self, provider: str) -> dict | None:
        with self.faults_lock:
            queue = self.faults[provider]
            if not queue:
                return None
            fault = queue[0]
            fault["count"] -= 1
            if fault["count"] <= 0:
                queue.pop(0)
            return dict(fault)

    # --- sending ----------------------------------------------------------------------------------

    def accept(self, provider: str, messages: list[dict]) -> None:
        """Records a request's messages and their events, and schedules the posts."""
        t0 = messages[0]["created_at"] if messages else now()
        t1, t2 = t0 + self.delay, t0 + 2 * self.delay
        plan = sendgrid_events if provider == "sendgrid" else mailgun_events
        events, by_message, hooks = [], {}, {}
        for m in messages:
            planned = plan(m, t1, t2)
            if m["account"] not in hooks:
                hooks[m["account"]] = len(self.store.webhooks(provider, m["account"]))
            m["options"]["webhooks_at_send"] = hooks[m["account"]]
            by_message[m["id"]] = planned
            events += [(m["id"], seq, phase, ev, payload) for seq, (phase, ev, payload) in enumerate(planned)]
        self.store.add_messages(messages, events)
        for phase, due in ((1, t1), (2, t2)):
            self.schedule(provider, messages, by_message, phase, due)
        for m in messages:
            url = m["options"].get("one_click_url")
            if url and "unsubscribe" in address_tags(m["recipient"]):
                self.poster.submit(Job([Post("one-click", url, [(m["id"], "one-click unsubscribe")],
                                             body=b"List-Unsubscribe=One-Click")]), t2)

    def schedule(self, provider: str, messages: list[dict], by_message: dict, phase: int | None, due: float) -> None:
        """Jobs posting the events of `messages` (of one phase, or all with None) to every matching
        webhook."""
        accounts = {m["account"] for m in messages}
        for account in accounts:
            mine = [m for m in messages if m["account"] == account]
            for hook in self.store.webhooks(provider, account):
                if provider == "sendgrid":
                    batch = [(m["id"], ev, payload) for m in mine for ph, ev, payload in by_message[m["id"]]
                             if phase is None or ph == phase]
                    posts = [Post("sendgrid", hook["url"], [(mid, ev) for mid, ev, _ in chunk],
                                  body=sendgrid_body([p for _, _, p in chunk]))
                             for chunk in (batch[i:i + EVENTS_PER_POST] for i in range(0, len(batch), EVENTS_PER_POST))]
                    if posts:
                        self.poster.submit(Job(posts), due)
                else:
                    for m in mine:
                        posts = [Post("mailgun", hook["url"], [(m["id"], ev)], event_data=payload,
                                      signing_key=hook["signing_key"])
                                 for ph, ev, payload in by_message[m["id"]] if phase is None or ph == phase]
                        if posts:
                            self.poster.submit(Job(posts), due)

    def redeliver(self, message_id: str) -> int:
        rows = self.store.q("select * from messages where id = ?", (message_id,))
        if not rows:
            return 0
        row = rows[0]
        m = {"id": row["id"], "account": row["account"]}
        planned = [(e["phase"], e["event"], json.loads(e["payload"]))
                   for e in self.store.q("select * from events where message_id = ? order by seq", (message_id,))]
        self.schedule(row["provider"], [m], {row["id"]: planned}, None, now())
        return len(self.store.webhooks(row["provider"], row["account"]))

    # --- posting ----------------------------------------------------------------------------------

    def run_job(self, job: Job) -> None:
        for i, post in enumerate(job.posts):
            if not self.store.existing([mid for mid, _ in post.covers]):
                continue  # cleared meanwhile
            attempt = job.attempt if i == 0 else 1
            status, answer, error, body = self.deliver(post)
            self.store.record_delivery(post.kind, post.url, post.covers, attempt, status, answer, error, body)
            retry = status is None or status == 429 or status >= 500
            if retry and attempt < self.attempts:
                self.poster.submit(Job(job.posts[i:], attempt + 1), now() + self.backoff * 2 ** (attempt - 1))
                return

    def deliver(self, post: Post) -> tuple[int | None, str, str, bytes]:
        timestamp = str(int(now()))
        if post.kind == "sendgrid":
            body = post.body
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT_SG,
                       SG_SIGNATURE: self.sign_sendgrid(timestamp, body), SG_TIMESTAMP: timestamp}
        elif post.kind == "mailgun":
            token = secrets.token_hex(25)
            body = json.dumps({"signature": {"timestamp": timestamp, "token": token,
                                             "signature": self.sign_mailgun(post.signing_key, timestamp, token)},
                               "event-data": post.event_data}).encode()
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT_MG}
        else:
            body = post.body
            headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": OPEN_UA}
        url = urllib.parse.urlsplit(post.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            return None, "", f"not an http(s) URL: {post.url}", body
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname, url.port, timeout=self.timeout)
        try:
            conn.request("POST", (url.path or "/") + (f"?{url.query}" if url.query else ""), body=body,
                         headers=headers)
            resp = conn.getresponse()
            answer = resp.read(64 * 1024).decode("utf-8", "replace")
            return resp.status, answer, "", body
        except (OSError, http.client.HTTPException) as e:
            return None, "", f"{type(e).__name__}: {e}", body
        finally:
            conn.close()


# ================================================================================================
# pages
# ================================================================================================

def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}code,pre{font:12px/1.4 ui-monospace,monospace}pre{background:#f7f7f7;padding:.6em;
overflow:auto;white-space:pre-wrap;word-break:break-all}.ok{color:#0a6b2b}.bad{color:#b00020}.dim{color:#777}
iframe{width:100%;height:600px;border:1px solid #ccc}form.inline{display:inline}
input[type=text]{width:22em}nav a{margin-right:1em}
"""


def page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><nav><a href=\"/\">all mail</a>"
            f"<a href=\"/api/messages\">JSON</a></nav>{body}</body></html>").encode("utf-8")


def status_cell(deliveries: list[sqlite3.Row]) -> str:
    if not deliveries:
        return ""
    last: dict[tuple[str, str], sqlite3.Row] = {}
    for d in deliveries:
        last[(d["kind"], d["url"])] = d
    cells = []
    for d in last.values():
        s = d["status"]
        good = s is not None and 200 <= s < 300
        cells.append(f"<span class={'ok' if good else 'bad'}>{esc(s if s is not None else 'no answer')}</span>")
    return " ".join(cells)


def index_page(app: App, to: str, limit: int) -> bytes:
    store = app.store
    where, args = ("where lower(recipient) = lower(?)", [to]) if to else ("", [])
    total = store.q(f"select count(*) c from messages {where}", args)[0]["c"]
    rows = store.q(f"select * from messages {where} order by n desc limit ?", args + [limit])
    trs = []
    for r in rows:
        planned = [e["event"] for e in store.q("select event from events where message_id = ? order by seq", (r["id"],))]
        our = json.loads(r["variables"]).get("message_id", "")
        trs.append(
            f"<tr><td>{esc(iso(r['created_at']))}</td><td>{esc(r['provider'])}</td><td>{esc(r['mail_from'])}</td>"
            f"<td>{esc(r['recipient'])}</td><td><a href=\"/messages/{esc(r['id'])}\">{esc(r['subject'] or '(no subject)')}</a></td>"
            f"<td><code>{esc(our)}</code></td><td>{esc(', '.join(planned))}</td>"
            f"<td>{status_cell(deliveries_of(store, r['id']))}</td></tr>")
    hooks = store.webhooks()
    hook_rows = "".join(
        f"<tr><td>{esc(h['provider'])}</td><td><code>{esc(h['url'])}</code></td>"
        f"<td>{esc(h['account_label'] or 'all mail')}</td><td>{esc(mask(h['signing_key']))}</td>"
        f"<td><form class=inline method=post action=\"/_fake/webhooks/delete\"><input type=hidden name=provider "
        f"value=\"{esc(h['provider'])}\"><input type=hidden name=url value=\"{esc(h['url'])}\">"
        f"<button>remove</button></form></td></tr>" for h in hooks) or "<tr><td colspan=5 class=dim>none: mail is " \
        "recorded, no events are posted</td></tr>"
    rules = "".join(f"<tr><td><code>{esc(a)}</code></td><td>{esc(b)}</td><td>{esc(c)}</td><td>{esc(d)}</td></tr>"
                    for a, b, c, d in RULES)
    body = f"""
<h1>Fake email: {total} message{'s' if total != 1 else ''}{' to ' + esc(to) if to else ''}</h1>
<form method=get action="/"><input type=text name=to value="{esc(to)}" placeholder="recipient address">
<button>filter</button></form>
<table><tr><th>time (UTC)</th><th>provider</th><th>from</th><th>to</th><th>subject</th><th>our message id</th>
<th>events</th><th>posts</th></tr>{''.join(trs) or '<tr><td colspan=8 class=dim>no mail yet</td></tr>'}</table>
<p class=dim>Showing {len(rows)} of {total}, newest first.
<form class=inline method=post action="/_fake/clear"><button>delete all mail</button></form></p>
<h2>Webhooks (where events are posted)</h2>
<table><tr><th>provider</th><th>URL</th><th>for</th><th>signing key</th><th></th></tr>{hook_rows}</table>
<form method=post action="/_fake/webhooks"><select name=provider><option>sendgrid</option><option>mailgun</option>
</select> <input type=text name=url placeholder="http://127.0.0.1:9000/webhooks/email/sendgrid/TENANT_KEY">
<input type=text name=signing_key placeholder="Mailgun webhook signing key"> <button>add</button></form>
<p>SendGrid events are signed with the fake's key: put this verification key into the portal's SendGrid
connector (<code>webhook_public_key</code>; also at
<a href="/_fake/sendgrid/public-key">/_fake/sendgrid/public-key</a>):</p>
<pre>{esc(app.sg_public_key)}</pre>
<p>Mailgun events are signed with the signing key registered with the webhook: the same value goes into the
portal's Mailgun connector (<code>webhook_signing_key</code>). The URL's path is the one the connector view
shows. From a shell:</p>
<pre>curl -X POST {esc(app.base_url)}/_fake/webhooks -H 'Content-Type: application/json' \\
  -d '{{"provider":"mailgun","url":"http://127.0.0.1:9000/webhooks/email/mailgun/TENANT_KEY","signing_key":"KEY"}}'</pre>
<h2>What happens to a message (the recipient's +tags)</h2>
<table><tr><th>address</th><th>outcome</th><th>SendGrid events</th><th>Mailgun events</th></tr>{rules}</table>
<p class=dim>Delivery events are posted {app.delay:g} s after the send, engagement events {app.delay:g} s later.
Open and click events need tracking on (SendGrid tracking_settings, Mailgun o:tracking*; on when not given).</p>
"""
    return page("Fake email", body)


def mask(secret: str) -> str:
    if not secret:
        return ""
    return "••••" + secret[-4:] if len(secret) > 8 else "••••"


def message_page(app: App, row: sqlite3.Row) -> bytes:
    store = app.store
    headers = json.loads(row["headers"])
    options = json.loads(row["options"])
    variables = json.loads(row["variables"])
    header_rows = "".join(f"<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>" for k, v in headers)
    events = store.q("select * from events where message_id = ? order by seq", (row["id"],))
    event_rows = "".join(
        f"<tr><td>{'delivery' if e['phase'] == 1 else 'engagement'}</td><td>{esc(e['event'])}</td>"
        f"<td><details><summary>payload</summary><pre>{esc(json.dumps(json.loads(e['payload']), indent=2))}</pre>"
        f"</details></td></tr>" for e in events)
    ds = deliveries_of(store, row["id"])
    delivery_rows = "".join(
        f"<tr><td>{esc(iso(d['at']))}</td><td>{esc(d['kind'])}</td><td><code>{esc(d['url'])}</code></td>"
        f"<td>{esc(', '.join(delivery_json(d, row['id'])['events']))}"
        f"{' (of ' + str(len(json.loads(d['events']))) + ' in the post)' if len(json.loads(d['events'])) > 1 else ''}</td>"
        f"<td>{d['attempt']}</td><td class={'ok' if d['status'] is not None and 200 <= d['status'] < 300 else 'bad'}>"
        f"{esc(d['status'] if d['status'] is not None else 'no answer')}</td>"
        f"<td><pre>{esc(d['answer'] or d['error'])}</pre><details><summary>body posted</summary>"
        f"<pre>{esc(d['body'])}</pre></details></td></tr>" for d in ds)
    hooks = len(store.webhooks(row["provider"], row["account"]))
    if not ds:
        note = (f"No webhook of {esc(row['provider'])} was registered when this was sent: nothing posted."
                if options.get("webhooks_at_send") == 0 else "Not posted yet.")
        delivery_rows = f"<tr><td colspan=7 class=dim>{note}</td></tr>"
    iframe = (f"<iframe sandbox=\"\" referrerpolicy=no-referrer title=\"HTML part\" srcdoc=\"{esc(row['html_part'])}\">"
              "</iframe>" if row["html_part"] else "<p class=dim>no HTML part</p>")
    body = f"""
<h1>{esc(row['subject'] or '(no subject)')}</h1>
<table>
<tr><th>recipient</th><td>{esc(row['recipient'])}</td></tr>
<tr><th>provider</th><td>{esc(row['provider'])} · request <code>{esc(row['request_id'])}</code> · message
<code>{esc(row['provider_message_id'])}</code></td></tr>
<tr><th>sent</th><td>{esc(iso(row['created_at']))}</td></tr>
<tr><th>{'custom_args' if row['provider'] == 'sendgrid' else 'user-variables'}</th>
<td><code>{esc(json.dumps(variables, ensure_ascii=False))}</code></td></tr>
<tr><th>{'categories' if row['provider'] == 'sendgrid' else 'tags'}</th><td>{esc(', '.join(json.loads(row['tags'])))}</td></tr>
<tr><th>options</th><td><code>{esc(json.dumps(options, ensure_ascii=False))}</code></td></tr>
</table>
<h2>Headers</h2><table>{header_rows}</table>
<h2>Text part</h2><pre>{esc(row['text_part']) or '<span class=dim>none</span>'}</pre>
<h2>HTML part</h2>{iframe}
<details><summary>HTML source</summary><pre>{esc(row['html_part'])}</pre></details>
<h2>Events</h2><table><tr><th>phase</th><th>event</th><th></th></tr>{event_rows}</table>
<h2>Posts</h2>
<table><tr><th>time (UTC)</th><th>kind</th><th>URL</th><th>events</th><th>attempt</th><th>status</th>
<th>answer</th></tr>{delivery_rows}</table>
<form method=post action="/messages/{esc(row['id'])}/redeliver"><button {'disabled' if not hooks else ''}>post the
events again</button> <span class=dim>to the {hooks} webhook(s) registered now for this message</span></form>
"""
    return page(row["subject"] or "message", body)


# ================================================================================================
# HTTP
# ================================================================================================

SECURITY_HEADERS = {
    # The mail's HTML is shown in a sandboxed srcdoc iframe, which inherits this policy: no script
    # runs, images and styles load.
    "Content-Security-Policy": "default-src 'none'; img-src * data:; style-src 'unsafe-inline' *; font-src * data:;"
                               " frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-email/1"
    app: App  # set on the class by make_server
    max_body = MAX_BODY_BYTES
    unread = 0  # bytes of a refused body still on the way (413)

    # --- plumbing ---------------------------------------------------------------------------------

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{iso(now())} {self.address_string()} {fmt % args}\n")

    def send(self, status: int, body: bytes = b"", content_type: str | None = "application/json",
             headers: dict | None = None) -> None:
        self.send_response(status)
        if content_type and body:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json(self, status: int, payload, headers: dict | None = None) -> None:
        self.send(status, json.dumps(payload, ensure_ascii=False).encode(), "application/json", headers)

    def html(self, status: int, body: bytes) -> None:
        self.send(status, body, "text/html; charset=utf-8", SECURITY_HEADERS)

    def redirect(self, location: str) -> None:
        self.send(303, b"", None, {"Location": location})

    def refuse(self, r: Refusal) -> None:
        if isinstance(r.payload, (bytes, str)):
            body = r.payload.encode() if isinstance(r.payload, str) else r.payload
            self.send(r.status, body, r.content_type, r.headers)
        else:
            self.json(r.status, r.payload, r.headers)

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(1024)
                n = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return b"".join(chunks)
                size += n
                if size > self.max_body:
                    self.close_connection = True
                    raise Refusal(413, {"message": "request entity too large"})
                chunks.append(self.rfile.read(n))
                self.rfile.readline(16)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise Refusal(400, {"message": "bad Content-Length"}) from None
        if length > self.max_body:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            self.unread = length
            raise Refusal(413, {"message": f"request entity too large (limit {self.max_body} bytes)"})
        return self.rfile.read(length) if length > 0 else b""

    def same_origin(self) -> bool:
        """A browser form post from another site must not drive the fake."""
        origin = self.headers.get("Origin")
        return not origin or urllib.parse.urlsplit(origin).netloc == self.headers.get("Host", "")

    def dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, dict(urllib.parse.parse_qsl(url.query))
        try:
            for method, pattern, fn in ROUTES:
                m = re.fullmatch(pattern, path)
                if m and method == self.command:
                    return fn(self, query, *m.groups())
            if any(re.fullmatch(p, path) for _, p, _ in ROUTES):
                self.read_body()
                return self.json(405, {"errors": [{"message": "method not allowed", "field": None, "help": None}]})
            self.read_body()
            self.json(404, {"errors": [{"message": "resource not found", "field": None, "help": None}]})
        except Refusal as r:
            self.refuse(r)
        except Exception:  # noqa: BLE001 - answer 500, keep serving
            traceback.print_exc()
            self.close_connection = True
            self.json(500, {"errors": [{"message": "internal error of the fake (see its log)", "field": None,
                                        "help": None}]})

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = dispatch

    def finish(self) -> None:
        """After a 413, read (and drop) what the client still sends for a moment before closing, so
        it gets the answer rather than a reset."""
        if self.unread:
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(2.0)
                left = min(self.unread, 2 * self.max_body + 1)
                while left > 0:
                    chunk = self.connection.recv(min(left, 1 << 20))
                    if not chunk:
                        break
                    left -= len(chunk)
            except OSError:
                pass
        super().finish()

    # --- SendGrid ---------------------------------------------------------------------------------

    def sendgrid_key(self) -> str:
        auth = self.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key.startswith("SG."):
            raise Refusal(401, {"errors": [{"message": SG_AUTH_ERROR, "field": None, "help": None}]})
        return key

    def sg_send(self, _q) -> None:
        body = self.read_body()
        key = self.sendgrid_key()
        fault = self.app.take_fault("sendgrid")
        if fault:
            raise sendgrid_fault(fault)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Refusal(400, {"errors": [sg_error("Bad Request")]}) from None
        errors = sendgrid_validate(data)
        if errors:
            raise Refusal(400, {"errors": errors})
        if ((data.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable") is True:
            return self.send(200, b"", None)
        request_id, messages = sendgrid_messages(data, key_account(key))
        self.app.accept("sendgrid", messages)
        self.send(202, b"", None, {"X-Message-Id": request_id})

    def sg_scopes(self, _q) -> None:
        self.sendgrid_key()
        self.json(200, {"scopes": ["mail.send"]})

    def sg_signed_settings(self, _q) -> None:
        self.sendgrid_key()
        self.json(200, {"enabled": True, "public_key": self.app.sg_public_key})

    # --- Mailgun ----------------------------------------------------------------------------------

    def mailgun_auth(self) -> None:
        auth = self.headers.get("Authorization", "")
        try:
            user, _, key = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":") \
                if auth[:6].lower() == "basic " else ("", "", "")
        except (ValueError, UnicodeDecodeError):
            user, key = "", ""
        if user != "api" or not key:
            raise Refusal(401, "Forbidden", "text/plain; charset=utf-8")

    def mg_send(self, _q, domain: str) -> None:
        body = self.read_body()
        self.mailgun_auth()
        fault = self.app.take_fault("mailgun")
        if fault:
            raise mailgun_fault(fault)
        fields, files = parse_form(self.headers.get("Content-Type", ""), body)
        request_id, messages = mailgun_messages(urllib.parse.unquote(domain), fields, files)
        self.app.accept("mailgun", messages)
        self.json(200, {"id": f"<{request_id}>", "message": "Queued. Thank you."})

    def mg_domain(self, _q, domain: str) -> None:
        self.mailgun_auth()
        name = urllib.parse.unquote(domain)
        created = formatdate(now(), usegmt=True)
        self.json(200, {
            "domain": {"created_at": created, "id": hashlib.sha1(name.encode()).hexdigest()[:24],
                       "is_disabled": False, "name": name, "require_tls": False, "skip_verification": False,
                       "smtp_login": f"postmaster@{name}", "spam_action": "disabled", "state": "active",
                       "type": "custom", "web_prefix": "email", "web_scheme": "https", "wildcard": False},
            "receiving_dns_records": [], "sending_dns_records": [],
        })

    # --- mail you can see -------------------------------------------------------------------------

    def index(self, q) -> None:
        self.read_body()
        self.html(200, index_page(self.app, q.get("to", "").strip(), clamp(q.get("limit"), 200, 1000)))

    def message(self, _q, mid: str) -> None:
        self.read_body()
        rows = self.app.store.q("select * from messages where id = ?", (mid,))
        if not rows:
            return self.html(404, page("not found", "<h1>No such message</h1>"))
        self.html(200, message_page(self.app, rows[0]))

    def redeliver(self, _q, mid: str) -> None:
        self.read_body()
        if not self.same_origin():
            return self.json(403, {"message": "cross-site post refused"})
        if not self.app.store.q("select 1 from messages where id = ?", (mid,)):
            return self.json(404, {"message": "no such message"})
        n = self.app.redeliver(mid)
        if "application/json" in self.headers.get("Accept", ""):
            return self.json(202, {"webhooks": n})
        self.redirect(f"/messages/{mid}")

    def api_list(self, q) -> None:
        self.read_body()
        where, args = [], []
        if q.get("to"):
            where.append("lower(recipient) = lower(?)")
            args.append(q["to"].strip())
        if q.get("provider"):
            where.append("provider = ?")
            args.append(q["provider"])
        sql = "select * from messages" + (" where " + " and ".join(where) if where else "") + " order by n desc limit ?"
        rows = self.app.store.q(sql, args + [clamp(q.get("limit"), 50, 5000)])
        self.json(200, {"messages": [message_json(self.app.store, r, self.app.base_url) for r in rows]})

    def api_one(self, _q, mid: str) -> None:
        self.read_body()
        rows = self.app.store.q("select * from messages where id = ?", (mid,))
        if not rows:
            return self.json(404, {"message": "no such message"})
        self.json(200, message_json(self.app.store, rows[0], self.app.base_url))

    def api_clear(self, _q) -> None:
        self.read_body()
        self.json(200, {"deleted": self.app.store.clear()})

    def page_clear(self, _q) -> None:
        self.read_body()
        if not self.same_origin():
            return self.json(403, {"message": "cross-site post refused"})
        self.app.store.clear()
        self.redirect("/")

    # --- the fake's own controls ------------------------------------------------------------------

    def health(self, _q) -> None:
        self.read_body()
        n = self.app.store.q("select count(*) c from messages")[0]["c"]
        self.json(200, {"ok": True, "messages": n, "pending_posts": self.app.poster.pending()})

    def public_key(self, _q) -> None:
        self.read_body()
        self.send(200, (self.app.sg_public_key + "\n").encode(), "text/plain; charset=utf-8")

    def form_or_json(self) -> tuple[dict, bool]:
        body = self.read_body()
        if "json" in self.headers.get("Content-Type", ""):
            try:
                data = json.loads(body or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise Refusal(400, {"message": "malformed JSON"}) from None
            if not isinstance(data, dict):
                raise Refusal(400, {"message": "expected a JSON object"})
            return data, True
        if not self.same_origin():
            raise Refusal(403, {"message": "cross-site post refused"})
        return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"))), False

    def add_webhook(self, _q) -> None:
        data, is_json = self.form_or_json()
        provider = str(data.get("provider", "")).strip().lower()
        url = str(data.get("url", "")).strip()
        key = str(data.get("signing_key", "") or "").strip()
        if provider not in ("sendgrid", "mailgun"):
            raise Refusal(400, {"message": "provider must be sendgrid or mailgun"})
        if not re.match(r"https?://[^\s/]+", url):
            raise Refusal(400, {"message": "url must be an http(s) URL"})
        if provider == "mailgun" and not key:
            raise Refusal(400, {"message": "a mailgun webhook needs its signing_key"})
        if provider == "sendgrid":
            api_key = str(data.get("api_key", "") or "").strip()
            account, label = (key_account(api_key), f"API key {mask(api_key)}") if api_key else ("", "")
        else:
            domain = str(data.get("domain", "") or "").strip().lower()
            account, label = domain, (f"domain {domain}" if domain else "")
        with self.app.store.lock:
            self.app.store.db.execute(
                "insert into webhooks (provider, url, signing_key, account, account_label, created_at)"
                " values (?, ?, ?, ?, ?, ?) on conflict (provider, url) do update set signing_key = excluded.signing_key,"
                " account = excluded.account, account_label = excluded.account_label",
                (provider, url, key, account, label, now()))
        if not is_json:
            return self.redirect("/")
        self.json(201, {"provider": provider, "url": url, "for": label or "all mail"})

    def list_webhooks(self, _q) -> None:
        self.read_body()
        self.json(200, {"webhooks": [{"provider": h["provider"], "url": h["url"], "for": h["account_label"] or "all mail",
                                      "signing_key": mask(h["signing_key"])} for h in self.app.store.webhooks()],
                        "sendgrid_public_key": self.app.sg_public_key})

    def delete_webhooks(self, q) -> None:
        self.read_body()
        args: list = []
        sql = "delete from webhooks"
        if q.get("url"):
            sql += " where url = ?" + (" and provider = ?" if q.get("provider") else "")
            args = [q["url"]] + ([q["provider"]] if q.get("provider") else [])
        with self.app.store.lock:
            n = self.app.store.db.execute(sql, args).rowcount
        self.json(200, {"deleted": n})

    def delete_webhook_form(self, _q) -> None:
        data, _ = self.form_or_json()
        with self.app.store.lock:
            self.app.store.db.execute("delete from webhooks where provider = ? and url = ?",
                                      (data.get("provider", ""), data.get("url", "")))
        self.redirect("/")

    def add_fault(self, _q) -> None:
        body = self.read_body()
        try:
            data = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Refusal(400, {"message": "malformed JSON"}) from None
        provider = data.get("provider") if isinstance(data, dict) else None
        status = data.get("status") if isinstance(data, dict) else None
        if provider not in ("sendgrid", "mailgun") or not isinstance(status, int) or not 400 <= status <= 599:
            raise Refusal(400, {"message": "expected {provider: sendgrid|mailgun, status: 400..599, count?, "
                                           "retry_after?, message?}"})
        fault = {"provider": provider, "status": status, "count": max(1, int(data.get("count", 1))),
                 "retry_after": max(0, int(data.get("retry_after", 1))), "message": str(data.get("message") or "")}
        with self.app.faults_lock:
            self.app.faults[provider].append(fault)
        self.json(201, fault)

    def list_faults(self, _q) -> None:
        self.read_body()
        with self.app.faults_lock:
            self.json(200, {"faults": self.app.faults["sendgrid"] + self.app.faults["mailgun"]})

    def clear_faults(self, _q) -> None:
        self.read_body()
        with self.app.faults_lock:
            for queue in self.app.faults.values():
                queue.clear()
        self.json(200, {"deleted": True})


def sendgrid_fault(f: dict) -> Refusal:
    status, msg = f["status"], f["message"]
    if status == 429:
        return Refusal(429, {"errors": [{"field": None, "message": msg or "too many requests", "help": None}]},
                       headers={"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": str(int(now()) + f["retry_after"])})
    if status == 401:
        return Refusal(401, {"errors": [{"message": msg or SG_AUTH_ERROR, "field": None, "help": None}]})
    if status == 403:
        return Refusal(403, {"errors": [{"message": msg or "access forbidden", "field": None, "help": None}]})
    return Refusal(status, {"errors": [{"message": msg or "internal server error", "field": None, "help": None}]})


def mailgun_fault(f: dict) -> Refusal:
    status, msg = f["status"], f["message"]
    if status == 401:
        return Refusal(401, msg or "Forbidden", "text/plain; charset=utf-8")
    headers = {"Retry-After": str(f["retry_after"])} if status == 429 else {}
    return Refusal(status, {"message": msg or ("Too many requests" if status == 429 else "Internal server error")},
                   headers=headers)


def clamp(raw: str | None, default: int, top: int) -> int:
    try:
        return max(1, min(top, int(raw))) if raw else default
    except ValueError:
        return default


ROUTES = [
    ("POST", r"/v3/mail/send", Handler.sg_send),
    ("GET", r"/v3/scopes", Handler.sg_scopes),
    ("GET", r"/v3/user/webhooks/event/settings/signed", Handler.sg_signed_settings),
    ("POST", r"/v3/([^/]+)/messages", Handler.mg_send),
    ("GET", r"/v3/domains/([^/]+)", Handler.mg_domain),
    ("GET", r"/", Handler.index),
    ("GET", r"/messages/([0-9a-f]+)", Handler.message),
    ("POST", r"/messages/([0-9a-f]+)/redeliver", Handler.redeliver),
    ("GET", r"/api/messages", Handler.api_list),
    ("DELETE", r"/api/messages", Handler.api_clear),
    ("GET", r"/api/messages/([0-9a-f]+)", Handler.api_one),
    ("GET", r"/_fake/health", Handler.health),
    ("GET", r"/_fake/sendgrid/public-key", Handler.public_key),
    ("POST", r"/_fake/webhooks", Handler.add_webhook),
    ("GET", r"/_fake/webhooks", Handler.list_webhooks),
    ("DELETE", r"/_fake/webhooks", Handler.delete_webhooks),
    ("POST", r"/_fake/webhooks/delete", Handler.delete_webhook_form),
    ("POST", r"/_fake/clear", Handler.page_clear),
    ("POST", r"/_fake/faults", Handler.add_fault),
    ("GET", r"/_fake/faults", Handler.list_faults),
    ("DELETE", r"/_fake/faults", Handler.clear_faults),
]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(args: argparse.Namespace) -> Server:
    base = args.base_url or f"http://{args.host}:{args.port}"
    app = App(args.store, base, args.delay, args.attempts, args.backoff, args.timeout, args.workers)
    handler = type("BoundHandler", (Handler,), {"app": app, "max_body": args.max_body})
    return Server((args.host, args.port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8425)
    parser.add_argument("--store", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".state",
                                                        "fake_email.sqlite3"))
    parser.add_argument("--base-url", default="", help="the fake's URL as others reach it (default http://HOST:PORT)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds from a send to its delivery events")
    parser.add_argument("--attempts", type=int, default=5, help="tries of each event post")
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds before the 2nd try (doubling)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the portal's answer")
    parser.add_argument("--workers", type=int, default=4, help="event posts in flight at once")
    parser.add_argument("--max-body", type=int, default=MAX_BODY_BYTES, help="largest request body (413 above)")
    args = parser.parse_args(argv)
    server = make_server(args)
    app = server.RequestHandlerClass.app
    print(f"fake email on {app.base_url} (store {os.path.abspath(args.store)}; SendGrid event key "
          f"{app.key_path})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
