"""The local stack's fake of the SendGrid and Mailgun send APIs (local/fake_email.py).

The fake runs as a subprocess on a free port with its store in a temporary directory; a "portal"
(http.server in a thread, on another free port) receives the events it posts and answers with
the status a test asks for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

LOCAL = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(LOCAL, "fake_email.py")
SG_KEY = "SG.test-key.local"
MG_DOMAIN = "mg.example.test"
MG_SIGNING_KEY = "key-local-webhook-signing-0123456789"
ATTEMPTS = 3

# The field sets of SendGrid's documented events (the Event Webhook reference's examples), beside
# the custom args SendGrid puts at the top level.
SG_FIELDS = {
    "processed": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id"},
    "delivered": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id", "response"},
    "deferred": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id", "response", "attempt"},
    "bounce": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id", "reason", "status", "type"},
    "dropped": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id", "reason", "status"},
    "open": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id", "useragent", "ip"},
    "click": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id", "useragent", "ip", "url"},
    "spamreport": {"email", "timestamp", "smtp-id", "event", "sg_event_id", "sg_message_id"},
}
# Mailgun's documented event-data (accepted, delivered, failed) top-level fields.
MG_SENDING_FIELDS = {"event", "id", "timestamp", "log-level", "envelope", "flags", "message", "storage", "recipient",
                     "recipient-domain", "campaigns", "tags", "user-variables"}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


class Answer:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def call(base: str, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None) -> Answer:
    h = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base + path, data=body, method=method, headers=h)
    try:
        with OPENER.open(req, timeout=30) as resp:
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


def wait_until(what: str, predicate, timeout: float = 15.0):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def basic(user: str, key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


SG_AUTH = {"Authorization": f"Bearer {SG_KEY}"}
MG_AUTH = basic("api", "key-anything")


def start_fake(store_dir: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(port), "--store",
         os.path.join(store_dir, "fake_email.sqlite3"), "--delay", "0.05", "--backoff", "0.05", "--attempts",
         str(ATTEMPTS), "--timeout", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            if call(base, "GET", "/_fake/health").status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("the fake did not start:\n" + proc.stdout.read().decode())
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


class Portal:
    """Records every POST; answers with the statuses queued for a path (else 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        portal = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with portal.lock:
                    portal.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                    queued = portal.answers.get(self.path) or []
                    status = queued.pop(0) if queued else 200
                answer = json.dumps({"status": status, "seen": len(body)}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posts(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def reset(self):
        with self.lock:
            self.requests.clear()
            self.answers.clear()


@pytest.fixture(scope="module")
def portal():
    p = Portal()
    yield p
    p.server.shutdown()


@pytest.fixture(scope="module")
def fake_proc(tmp_path_factory):
    store = str(tmp_path_factory.mktemp("fake_email"))
    port = free_port()
    proc = start_fake(store, port)
    yield f"http://127.0.0.1:{port}", store
    stop(proc)


@pytest.fixture
def fake(fake_proc, portal):
    base, _ = fake_proc
    assert call(base, "DELETE", "/api/messages").status == 200
    assert call(base, "DELETE", "/_fake/webhooks").status == 200
    assert call(base, "DELETE", "/_fake/faults").status == 200
    portal.reset()
    return base


def messages(base: str, **query) -> list[dict]:
    a = call(base, "GET", "/api/messages?" + urllib.parse.urlencode({"limit": 5000, **query}))
    assert a.status == 200
    return a.json()["messages"]


def sg_mail(recipients: list[str], **extra) -> dict:
    body = {
        "personalizations": [
            {"to": [{"email": r}], "custom_args": {"message_id": str(uuid.uuid4())}} for r in recipients
        ],
        "from": {"email": "news@shop.example.test", "name": "Shop"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi there https://shop.example.test/a"},
                    {"type": "text/html", "value": '<p>Hi <a href="https://shop.example.test/a?x=1&amp;y=2">'
                                                   'offer</a> <a href="https://shop.example.test/b">b</a></p>'}],
        "custom_args": {"campaign_id": "camp-1", "tenant_id": "tenant-1"},
    }
    body.update(extra)
    return body


def register(base: str, payload: dict) -> None:
    a = call(base, "POST", "/_fake/webhooks", payload)
    assert a.status == 201, a.text


def sg_events(posts: list[dict]) -> list[dict]:
    return [e for p in posts for e in json.loads(p["body"])]


def verify_sendgrid(public_key_b64: str, post: dict, body: bytes | None = None) -> bool:
    key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    ts = post["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"]
    sig = base64.b64decode(post["headers"]["X-Twilio-Email-Event-Webhook-Signature"])
    try:
        key.verify(sig, ts.encode() + (post["body"] if body is None else body), ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


# ------------------------------------------------------------------------------------------------
# SendGrid: sending
# ------------------------------------------------------------------------------------------------

def test_sendgrid_batch_records_one_message_per_personalization_with_its_own_values(fake):
    people = [("ann@example.test", "Ann", "a-1"), ("bob@example.test", "Bob", "b-2"), ("cy@example.test", "Cy", "c-3")]
    body = {
        "personalizations": [
            {"to": [{"email": email, "name": name}], "substitutions": {"-name-": name, "-code-": code},
             "custom_args": {"message_id": f"msg-{name}"},
             "headers": {"List-Unsubscribe": f"<https://portal.test/u/{code}>",
                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
             **({"subject": "Special for -name-"} if name == "Cy" else {})}
            for email, name, code in people
        ],
        "from": {"email": "news@shop.example.test", "name": "Shop"},
        "subject": "Hello -name-",
        "content": [{"type": "text/plain", "value": "Dear -name-, your code is -code-."},
                    {"type": "text/html", "value": "<p>Dear <b>-name-</b>, code -code-</p>"}],
        "custom_args": {"campaign_id": "camp-1"},
        "categories": ["newsletter"],
    }
    a = call(fake, "POST", "/v3/mail/send", body, SG_AUTH)
    assert a.status == 202
    assert a.body == b""
    request_id = a.headers["X-Message-Id"]
    assert request_id

    got = {m["to"]: m for m in messages(fake, provider="sendgrid")}
    assert set(got) == {p[0] for p in people}
    for email, name, code in people:
        m = got[email]
        assert m["subject"] == (f"Special for {name}" if name == "Cy" else f"Hello {name}")
        assert m["text"] == f"Dear {name}, your code is {code}."
        assert m["html"] == f"<p>Dear <b>{name}</b>, code {code}</p>"
        assert m["variables"] == {"campaign_id": "camp-1", "message_id": f"msg-{name}"}
        assert m["our_message_id"] == f"msg-{name}"
        assert m["request_id"] == request_id
        assert m["provider_message_id"].startswith(request_id + ".")
        assert m["headers"]["To"] == f"{name} <{email}>"
        assert m["headers"]["List-Unsubscribe"] == f"<https://portal.test/u/{code}>"
        assert m["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert m["tags"] == ["newsletter"]
        # Nobody sees another recipient's address, name or values.
        visible = json.dumps([m["header_list"], m["subject"], m["text"], m["html"], m["variables"]])
        for other, other_name, other_code in people:
            if other != email:
                assert other not in visible and other_code not in visible and f"msg-{other_name}" not in visible
    assert len({m["provider_message_id"] for m in got.values()}) == 3


def test_sendgrid_refuses_a_missing_or_foreign_key(fake):
    for headers in ({}, {"Authorization": "Bearer abc"}, {"Authorization": "Basic U0cueDp5"}):
        a = call(fake, "POST", "/v3/mail/send", sg_mail(["a@example.test"]), headers)
        assert a.status == 401
        assert a.json() == {"errors": [{"message": "The provided authorization grant is invalid, expired, or revoked",
                                        "field": None, "help": None}]}
        assert call(fake, "GET", "/v3/scopes", None, headers).status == 401
    a = call(fake, "GET", "/v3/scopes", None, SG_AUTH)
    assert (a.status, a.json()) == (200, {"scopes": ["mail.send"]})
    assert messages(fake) == []


@pytest.mark.parametrize("mutate, field, words", [
    (lambda b: b.update(personalizations=[{"to": [{"email": f"u{i}@example.test"}]} for i in range(1001)]),
     "personalizations", "You have provided 1001 personalizations"),
    (lambda b: b.update(personalizations=[]), "personalizations", "at least one personalization"),
    (lambda b: b["personalizations"][1]["to"][0].update(email="not-an-address"), "personalizations.1.to.0.email",
     "valid address"),
    (lambda b: b["personalizations"][1].pop("to"), "personalizations.1.to", "to array is required"),
    (lambda b: b["personalizations"][1]["to"][0].update(email="A@example.test"), "personalizations.1",
     "duplicate instance of [A@example.test]"),
    (lambda b: b.pop("content"), "content", "content parameter is required"),
    (lambda b: b.update(content=[{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}]),
     "content", "text/plain content must be first"),
    (lambda b: b.update(content=[{"type": "text/plain", "value": ""}]), "content.0.value", "at least one character"),
    (lambda b: b.pop("subject"), "subject", "subject is required"),
    (lambda b: b.update({"from": {"email": "nobody"}}), "from.email", "from object must be provided"),
])
def test_sendgrid_validates_like_sendgrid(fake, mutate, field, words):
    body = sg_mail(["a@example.test", "b@example.test"])
    mutate(body)
    a = call(fake, "POST", "/v3/mail/send", body, SG_AUTH)
    assert a.status == 400, a.text
    errors = a.json()["errors"]
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    assert any(e["field"] == field and words in e["message"] for e in errors), errors
    assert messages(fake) == []


def test_sendgrid_takes_exactly_1000_personalizations(fake):
    body = sg_mail([f"u{i}@example.test" for i in range(1000)])
    assert call(fake, "POST", "/v3/mail/send", body, SG_AUTH).status == 202
    assert len(messages(fake)) == 1000


def test_sendgrid_malformed_json_and_sandbox_mode(fake):
    a = call(fake, "POST", "/v3/mail/send", b"{not json", {**SG_AUTH, "Content-Type": "application/json"})
    assert a.status == 400
    assert a.json() == {"errors": [{"message": "Bad Request", "field": None, "help": None}]}
    a = call(fake, "POST", "/v3/mail/send", sg_mail(["a@example.test"], mail_settings={"sandbox_mode": {"enable": True}}),
             SG_AUTH)
    assert (a.status, a.body) == (200, b"")
    assert messages(fake) == []


# ------------------------------------------------------------------------------------------------
# Mailgun: sending
# ------------------------------------------------------------------------------------------------

def test_mailgun_batch_sending_substitutes_each_recipients_variables(fake):
    people = {"ann@example.test": ("Ann", "u-ann"), "bob@example.test": ("Bob", "u-bob"),
              "jane@example.test": ("Jane", "u-jane")}
    fields = [("from", '"Shop" <news@mg.example.test>')]
    fields += [("to", "ann@example.test"), ("to", '"Doe, Jane" <jane@example.test>, Bob <bob@example.test>')]
    fields += [
        ("subject", "Hi %recipient.t_name%"),
        ("text", "Hello %recipient.t_name%"),
        ("html", "<p>Hello <b>%recipient.h_name%</b></p>"),
        ("recipient-variables", json.dumps({e: {"t_name": n, "h_name": n, "message_id": f"msg-{n}", "hdr_0": f"<https://portal.test/u/{u}>"}
                                            for e, (n, u) in people.items()})),
        ("v:message_id", "%recipient.message_id%"),
        ("v:campaign_id", "camp-9"),
        ("h:List-Unsubscribe", "%recipient.hdr_0%"),
        ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("o:tracking", "yes"),
        ("o:tag", "newsletter"),
    ]
    a = call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", urllib.parse.urlencode(fields).encode(),
             {**MG_AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert a.status == 200, a.text
    answer = a.json()
    assert answer["message"] == "Queued. Thank you."
    assert answer["id"].startswith("<") and answer["id"].endswith(f"@{MG_DOMAIN}>")

    got = {m["to"]: m for m in messages(fake, provider="mailgun")}
    assert set(got) == set(people)
    for email, (name, unsub) in people.items():
        m = got[email]
        assert m["subject"] == f"Hi {name}"
        assert m["text"] == f"Hello {name}"
        assert m["html"] == f"<p>Hello <b>{name}</b></p>"
        assert m["variables"] == {"message_id": f"msg-{name}", "campaign_id": "camp-9"}
        assert m["headers"]["List-Unsubscribe"] == f"<https://portal.test/u/{unsub}>"
        assert m["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert m["headers"]["Message-Id"] == answer["id"]
        assert m["provider_message_id"] == answer["id"][1:-1]
        assert m["tags"] == ["newsletter"]
        visible = json.dumps([m["header_list"], m["subject"], m["text"], m["html"], m["variables"]])
        for other, (other_name, other_unsub) in people.items():
            if other != email:
                assert other not in visible and other_unsub not in visible and f"msg-{other_name}" not in visible
    assert got["jane@example.test"]["headers"]["To"] == '"Doe, Jane" <jane@example.test>'


def test_mailgun_without_recipient_variables_sends_one_message_to_all_multipart(fake):
    boundary = "----fake-email-test"
    parts = [("from", "news@mg.example.test"), ("to", "ann@example.test"), ("to", "bob@example.test"),
             ("subject", "Team update"), ("text", "Plain %recipient.x% stays"), ("h:X-Campaign", "c-1")]
    body = b""
    for name, value in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"a.txt\"\r\n"
             "Content-Type: text/plain\r\n\r\nhello file\r\n").encode()
    body += f"--{boundary}--\r\n".encode()
    a = call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", body,
             {**MG_AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert a.status == 200, a.text
    got = messages(fake, provider="mailgun")
    assert sorted(m["to"] for m in got) == ["ann@example.test", "bob@example.test"]
    for m in got:
        assert m["headers"]["To"] == "ann@example.test, bob@example.test"
        assert m["text"] == "Plain %recipient.x% stays"
        assert m["headers"]["X-Campaign"] == "c-1"
        assert m["options"]["attachments"] == [{"field": "attachment", "filename": "a.txt", "size": 10,
                                                "content_type": "text/plain"}]


def test_mailgun_refuses_bad_auth_and_bad_requests(fake):
    form = urllib.parse.urlencode({"from": "a@mg.example.test", "to": "b@example.test", "text": "x"}).encode()
    ctype = {"Content-Type": "application/x-www-form-urlencoded"}
    for headers in ({}, basic("user", "key"), basic("api", ""), {"Authorization": "Bearer SG.x"}):
        a = call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", form, {**headers, **ctype})
        assert (a.status, a.text) == (401, "Forbidden")
        assert call(fake, "GET", f"/v3/domains/{MG_DOMAIN}", None, headers).status == 401
    a = call(fake, "GET", f"/v3/domains/{MG_DOMAIN}", None, MG_AUTH)
    assert a.status == 200 and a.json()["domain"]["name"] == MG_DOMAIN and a.json()["domain"]["state"] == "active"

    def send(fields):
        return call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", urllib.parse.urlencode(fields).encode(),
                    {**MG_AUTH, **ctype})

    a = send([("to", "b@example.test"), ("text", "x")])
    assert (a.status, a.json()) == (400, {"message": "'from' parameter is missing"})
    a = send([("from", "a@mg.example.test"), ("to", "not an address"), ("text", "x")])
    assert (a.status, a.json()) == (400, {"message": "'to' parameter is not a valid address. please check documentation"})
    a = send([("from", "a@mg.example.test"), ("to", "b@example.test")])
    assert a.status == 400 and "Need at least one of 'text', 'html'" in a.json()["message"]
    a = send([("from", "a@mg.example.test"), ("to", ",".join(f"u{i}@example.test" for i in range(1001))), ("text", "x")])
    assert (a.status, a.json()) == (400, {"message": "Too many recipients, max is 1000"})
    a = send([("from", "a@mg.example.test"), ("to", "b@example.test"), ("text", "x"), ("recipient-variables", "{no")])
    assert a.status == 400 and "recipient-variables" in a.json()["message"]
    assert messages(fake) == []


# ------------------------------------------------------------------------------------------------
# events
# ------------------------------------------------------------------------------------------------

def test_sendgrid_events_are_signed_batches_following_the_address_rules(fake, portal):
    public_key = call(fake, "GET", "/_fake/sendgrid/public-key").text.strip()
    settings = call(fake, "GET", "/v3/user/webhooks/event/settings/signed", None, SG_AUTH).json()
    assert settings == {"enabled": True, "public_key": public_key}
    register(fake, {"provider": "sendgrid", "url": portal.base + "/webhooks/email/sendgrid/k1"})

    recipients = ["plain@example.test", "ann+bounce@example.test", "bob+click@example.test",
                  "cy+soft@example.test", "dee+spam@example.test", "eve+drop@example.test"]
    a = call(fake, "POST", "/v3/mail/send", sg_mail(recipients), SG_AUTH)
    assert a.status == 202
    request_id = a.headers["X-Message-Id"]
    ours = {m["to"]: m["our_message_id"] for m in messages(fake)}

    def all_events():
        evs = sg_events(portal.posts("/webhooks/email/sendgrid/k1"))
        return evs if len(evs) >= 16 else None

    events = wait_until("SendGrid events", all_events)
    time.sleep(0.3)  # nothing more comes
    posts = portal.posts("/webhooks/email/sendgrid/k1")
    assert len(posts) == 2  # the delivery batch, then the engagement batch
    for post in posts:
        assert post["headers"]["Content-Type"] == "application/json"
        assert post["body"].endswith(b"]\r\n") and b"},\r\n{" in post["body"]
        assert verify_sendgrid(public_key, post)
        assert not verify_sendgrid(public_key, post, post["body"].replace(b"example.test", b"example.tesT", 1))
        assert not verify_sendgrid(public_key, post, post["body"].rstrip(b"\r\n"))
        ts = int(post["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"])
        assert abs(ts - time.time()) < 60

    by = {}
    for e in events:
        by.setdefault(e["email"], []).append(e)
        assert set(e) - {"message_id", "campaign_id", "tenant_id"} == SG_FIELDS[e["event"]], e
        assert e["message_id"] == ours[e["email"]]
        assert (e["campaign_id"], e["tenant_id"]) == ("camp-1", "tenant-1")
        assert e["sg_message_id"].split(".", 1)[0] == request_id
        assert e["smtp-id"].startswith(f"<{request_id}@")
    assert len({e["sg_event_id"] for e in events}) == len(events) == 16
    kinds = {email: [e["event"] for e in evs] for email, evs in by.items()}
    assert kinds == {
        "plain@example.test": ["processed", "delivered"],
        "ann+bounce@example.test": ["processed", "bounce"],
        "bob+click@example.test": ["processed", "delivered", "open", "click"],
        "cy+soft@example.test": ["processed", "deferred", "bounce"],
        "dee+spam@example.test": ["processed", "delivered", "spamreport"],
        "eve+drop@example.test": ["processed", "dropped"],
    }
    hard = by["ann+bounce@example.test"][1]
    assert (hard["type"], hard["status"][0]) == ("bounce", "5")
    soft = by["cy+soft@example.test"][2]
    assert soft["type"] == "blocked"
    click = by["bob+click@example.test"][3]
    assert click["url"] == "https://shop.example.test/a?x=1&y=2"  # the first link, its entities decoded
    assert isinstance(by["cy+soft@example.test"][1]["attempt"], str)
    page = call(fake, "GET", "/")
    assert page.status == 200 and page.text.count('<span class=ok>200</span>') >= len(recipients)


def test_sendgrid_open_tracking_off_means_no_open_event(fake, portal):
    register(fake, {"provider": "sendgrid", "url": portal.base + "/sg-notrack"})
    body = sg_mail(["zed+click@example.test"], tracking_settings={"open_tracking": {"enable": False},
                                                                   "click_tracking": {"enable": False}})
    assert call(fake, "POST", "/v3/mail/send", body, SG_AUTH).status == 202
    wait_until("delivered", lambda: any(e["event"] == "delivered" for e in sg_events(portal.posts("/sg-notrack"))))
    time.sleep(0.4)
    assert [e["event"] for e in sg_events(portal.posts("/sg-notrack"))] == ["processed", "delivered"]


def test_mailgun_events_are_signed_one_post_each(fake, portal):
    path = "/webhooks/email/mailgun/k2"
    register(fake, {"provider": "mailgun", "url": portal.base + path, "signing_key": MG_SIGNING_KEY})
    fields = [("from", "news@mg.example.test"), ("subject", "S"), ("html", '<a href="https://x.test/1">1</a>'),
              ("recipient-variables", json.dumps({a: {"id": f"id-{a[0]}"} for a in
                                                  ("a@example.test", "b+soft@example.test", "c+spam@example.test",
                                                   "d+click@example.test", "e+bounce@example.test")})),
              ("v:message_id", "%recipient.id%"), ("v:tenant_id", "t-1")]
    fields += [("to", a) for a in ("a@example.test", "b+soft@example.test", "c+spam@example.test",
                                   "d+click@example.test", "e+bounce@example.test")]
    a = call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", urllib.parse.urlencode(fields).encode(),
             {**MG_AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert a.status == 200
    message_id = a.json()["id"][1:-1]

    posts = wait_until("Mailgun events", lambda: (lambda p: p if len(p) >= 14 else None)(portal.posts(path)))
    time.sleep(0.3)
    posts = portal.posts(path)
    assert len(posts) == 14
    by: dict[str, list[dict]] = {}
    tokens = set()
    for post in posts:
        body = json.loads(post["body"])
        assert set(body) == {"signature", "event-data"}
        sig = body["signature"]
        assert len(sig["token"]) == 50 and sig["token"] not in tokens
        tokens.add(sig["token"])
        expected = hmac.new(MG_SIGNING_KEY.encode(), (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256)
        assert hmac.compare_digest(expected.hexdigest(), sig["signature"])
        forged = hmac.new(b"another key", (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256)
        assert forged.hexdigest() != sig["signature"]
        assert abs(int(sig["timestamp"]) - time.time()) < 60
        d = body["event-data"]
        assert d["message"]["headers"]["message-id"] == message_id
        assert d["user-variables"] == {"message_id": f"id-{d['recipient'][0]}", "tenant_id": "t-1"}
        assert isinstance(d["timestamp"], float) and d["id"]
        if d["event"] in ("accepted", "delivered", "failed"):
            assert MG_SENDING_FIELDS <= set(d), d
        by.setdefault(d["recipient"], []).append(d)
    kinds = {r: [(d["event"], d.get("severity")) for d in evs] for r, evs in by.items()}
    assert kinds == {
        "a@example.test": [("accepted", None), ("delivered", None)],
        "b+soft@example.test": [("accepted", None), ("failed", "temporary"), ("failed", "permanent")],
        "c+spam@example.test": [("accepted", None), ("delivered", None), ("complained", None)],
        "d+click@example.test": [("accepted", None), ("delivered", None), ("opened", None), ("clicked", None)],
        "e+bounce@example.test": [("accepted", None), ("failed", "permanent")],
    }
    assert by["b+soft@example.test"][2]["reason"] == "old"
    assert by["e+bounce@example.test"][1]["reason"] == "bounce"
    assert by["e+bounce@example.test"][1]["delivery-status"]["code"] == 550
    assert by["d+click@example.test"][3]["url"] == "https://x.test/1"
    assert len({d["id"] for evs in by.values() for d in evs}) == 14


def test_webhook_filters_by_domain_and_key(fake, portal):
    register(fake, {"provider": "mailgun", "url": portal.base + "/mg-other", "signing_key": "k" * 20,
                    "domain": "other.example.test"})
    register(fake, {"provider": "mailgun", "url": portal.base + "/mg-mine", "signing_key": "k" * 20,
                    "domain": MG_DOMAIN})
    register(fake, {"provider": "sendgrid", "url": portal.base + "/sg-other", "api_key": "SG.other"})
    form = urllib.parse.urlencode({"from": "a@mg.example.test", "to": "b@example.test", "text": "x"}).encode()
    call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", form,
         {**MG_AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    call(fake, "POST", "/v3/mail/send", sg_mail(["c@example.test"]), SG_AUTH)
    wait_until("mine", lambda: len(portal.posts("/mg-mine")) == 2)
    time.sleep(0.3)
    assert portal.posts("/mg-other") == [] and portal.posts("/sg-other") == []


def test_each_post_outcome_is_recorded_and_failures_retried(fake, portal):
    register(fake, {"provider": "sendgrid", "url": portal.base + "/sg-401"})
    portal.answers["/sg-401"] = [401] * 10
    assert call(fake, "POST", "/v3/mail/send", sg_mail(["x@example.test"]), SG_AUTH).status == 202
    m = messages(fake)[0]
    wait_until("the 401", lambda: call(fake, "GET", f"/api/messages/{m['id']}").json()["deliveries"])
    time.sleep(0.3)
    deliveries = call(fake, "GET", f"/api/messages/{m['id']}").json()["deliveries"]
    assert [(d["status"], d["attempt"]) for d in deliveries] == [(401, 1)]  # a 4xx is not retried
    assert deliveries[0]["events"] == ["processed", "delivered"]
    assert '"status": 401' in deliveries[0]["answer"]
    page = call(fake, "GET", f"/messages/{m['id']}").text
    assert "<td class=bad>401</td>" in page and "/sg-401" in page

    call(fake, "DELETE", "/_fake/webhooks")
    register(fake, {"provider": "mailgun", "url": portal.base + "/mg-flaky", "signing_key": MG_SIGNING_KEY})
    portal.answers["/mg-flaky"] = [503]
    form = urllib.parse.urlencode({"from": "a@mg.example.test", "to": "y@example.test", "text": "x"}).encode()
    assert call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", form,
                {**MG_AUTH, "Content-Type": "application/x-www-form-urlencoded"}).status == 200
    y = messages(fake, to="y@example.test")[0]
    done = wait_until("the retry", lambda: (lambda d: d if len(d) >= 3 else None)(
        call(fake, "GET", f"/api/messages/{y['id']}").json()["deliveries"]))
    assert [(d["events"], d["status"], d["attempt"]) for d in done] == [
        (["accepted"], 503, 1), (["accepted"], 200, 2), (["delivered"], 200, 1)]
    kinds = [json.loads(p["body"])["event-data"]["event"] for p in portal.posts("/mg-flaky")]
    assert kinds == ["accepted", "accepted", "delivered"]  # in order, the retried one first

    call(fake, "DELETE", "/_fake/webhooks")
    closed = f"http://127.0.0.1:{free_port()}/nobody"
    register(fake, {"provider": "sendgrid", "url": closed})
    assert call(fake, "POST", "/v3/mail/send", sg_mail(["z@example.test"]), SG_AUTH).status == 202
    z = messages(fake, to="z@example.test")[0]
    tries = wait_until("the retries", lambda: (lambda d: d if len(d) >= ATTEMPTS else None)(
        call(fake, "GET", f"/api/messages/{z['id']}").json()["deliveries"]))
    time.sleep(0.5)
    tries = call(fake, "GET", f"/api/messages/{z['id']}").json()["deliveries"]
    assert [(d["status"], d["attempt"]) for d in tries] == [(None, n) for n in range(1, ATTEMPTS + 1)]
    assert all("Connection" in d["error"] or "refused" in d["error"] for d in tries)


def test_mail_of_an_unregistered_provider_is_recorded_and_can_be_posted_later(fake, portal):
    assert call(fake, "POST", "/v3/mail/send", sg_mail(["late@example.test"]), SG_AUTH).status == 202
    m = messages(fake)[0]
    time.sleep(0.4)
    assert call(fake, "GET", f"/api/messages/{m['id']}").json()["deliveries"] == []
    assert "No webhook of sendgrid was registered" in call(fake, "GET", f"/messages/{m['id']}").text
    register(fake, {"provider": "sendgrid", "url": portal.base + "/late"})
    a = call(fake, "POST", f"/messages/{m['id']}/redeliver", b"", {"Accept": "application/json"})
    assert (a.status, a.json()) == (202, {"webhooks": 1})
    wait_until("the redelivery", lambda: portal.posts("/late"))
    assert [e["event"] for e in sg_events(portal.posts("/late"))] == ["processed", "delivered"]
    # A cross-site form post does not drive it.
    a = call(fake, "POST", f"/messages/{m['id']}/redeliver", b"", {"Origin": "http://evil.test"})
    assert a.status == 403


def test_one_click_unsubscribe_is_posted_for_plus_unsubscribe(fake, portal):
    body = sg_mail(["quit+unsubscribe@example.test", "stay@example.test"])
    for p in body["personalizations"]:
        p["headers"] = {"List-Unsubscribe": f"<mailto:u@x.test>, <{portal.base}/u/{p['to'][0]['email'][:4]}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert call(fake, "POST", "/v3/mail/send", body, SG_AUTH).status == 202
    posts = wait_until("the one-click POST", lambda: portal.posts("/u/quit"))
    assert posts[0]["body"] == b"List-Unsubscribe=One-Click"
    assert posts[0]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    time.sleep(0.3)
    assert portal.posts("/u/stay") == []
    quit_msg = messages(fake, to="quit+unsubscribe@example.test")[0]
    deliveries = call(fake, "GET", f"/api/messages/{quit_msg['id']}").json()["deliveries"]
    assert [(d["kind"], d["status"]) for d in deliveries] == [("one-click", 200)]


def test_faults_answer_the_next_sends(fake):
    assert call(fake, "POST", "/_fake/faults", {"provider": "sendgrid", "status": 429, "retry_after": 7}).status == 201
    a = call(fake, "POST", "/v3/mail/send", sg_mail(["a@example.test"]), SG_AUTH)
    assert a.status == 429
    assert a.headers["X-RateLimit-Remaining"] == "0"
    assert 5 <= int(a.headers["X-RateLimit-Reset"]) - time.time() <= 9
    assert call(fake, "POST", "/v3/mail/send", sg_mail(["a@example.test"]), SG_AUTH).status == 202
    assert call(fake, "POST", "/_fake/faults", {"provider": "mailgun", "status": 429, "count": 2}).status == 201
    form = urllib.parse.urlencode({"from": "a@mg.example.test", "to": "b@example.test", "text": "x"}).encode()
    headers = {**MG_AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    answers = [call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", form, headers) for _ in range(3)]
    assert [a.status for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert len(messages(fake)) == 2


# ------------------------------------------------------------------------------------------------
# pages and robustness
# ------------------------------------------------------------------------------------------------

def test_pages_list_and_show_mail_escaped(fake):
    evil_subject = '<script>alert("s")</script> & "quotes"'
    evil_html = '<p onclick="x()">Hi</p><script>alert("h")</script><img src="https://img.test/a.png">'
    body = sg_mail(["ann@example.test"], subject=evil_subject,
                   content=[{"type": "text/plain", "value": "text <b>part</b>"},
                            {"type": "text/html", "value": evil_html}])
    body["personalizations"][0]["headers"] = {"List-Unsubscribe": "<https://portal.test/u/t1>",
                                              "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert call(fake, "POST", "/v3/mail/send", body, SG_AUTH).status == 202
    m = messages(fake)[0]

    index = call(fake, "GET", "/")
    assert index.status == 200 and index.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in index.headers["Content-Security-Policy"]
    assert "&lt;script&gt;alert(&quot;s&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in index.text
    assert "<script>" not in index.text
    assert f'href="/messages/{m["id"]}"' in index.text
    assert m["our_message_id"] in index.text and "ann@example.test" in index.text

    shown = call(fake, "GET", f"/messages/{m['id']}")
    assert shown.status == 200
    text = shown.text
    assert "<script>" not in text and "onclick=\"x()\"" not in text
    assert '<iframe sandbox=""' in text and "allow-scripts" not in text
    srcdoc = text.split('srcdoc="', 1)[1].split('"', 1)[0]
    assert srcdoc == ("&lt;p onclick=&quot;x()&quot;&gt;Hi&lt;/p&gt;&lt;script&gt;alert(&quot;h&quot;)&lt;/script&gt;"
                      "&lt;img src=&quot;https://img.test/a.png&quot;&gt;")
    assert "text &lt;b&gt;part&lt;/b&gt;" in text
    assert "List-Unsubscribe-Post" in text and "&lt;https://portal.test/u/t1&gt;" in text
    assert call(fake, "GET", "/messages/0123456789abcdef").status == 404

    assert len(messages(fake, to="ANN@example.test")) == 1
    assert messages(fake, to="nobody@example.test") == []
    assert call(fake, "DELETE", "/api/messages").json() == {"deleted": 1}
    assert messages(fake) == []


def test_oversized_and_malformed_requests(fake):
    with socket.create_connection(("127.0.0.1", int(fake.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(b"POST /v3/mail/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SG.x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 31457281\r\n\r\n" + b"{" * 65536)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert call(fake, "POST", "/_fake/webhooks", b"{nope", {"Content-Type": "application/json"}).status == 400
    assert call(fake, "POST", "/_fake/webhooks", {"provider": "mailgun", "url": "http://x.test/"}).status == 400
    assert call(fake, "POST", "/_fake/webhooks", {"provider": "other", "url": "http://x.test/"}).status == 400
    assert call(fake, "GET", "/v3/nothing-here").status == 404
    assert call(fake, "GET", "/_fake/health").json()["ok"] is True


def test_keeps_serving_under_concurrent_sends(fake):
    def one(i: int) -> int:
        if i % 2:
            return call(fake, "POST", "/v3/mail/send", sg_mail([f"sg{i}@example.test"]), SG_AUTH).status
        form = urllib.parse.urlencode({"from": "a@mg.example.test", "to": f"mg{i}@example.test", "text": "x"}).encode()
        return call(fake, "POST", f"/v3/{MG_DOMAIN}/messages", form,
                    {**MG_AUTH, "Content-Type": "application/x-www-form-urlencoded"}).status

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(64)))
    assert sorted(set(statuses)) == [200, 202]
    assert len(messages(fake)) == 64
    assert call(fake, "GET", "/").status == 200


def test_the_key_pair_is_made_once_per_state_dir(fake_proc):
    base, store = fake_proc
    first = call(base, "GET", "/_fake/sendgrid/public-key").text.strip()
    port = free_port()
    proc = start_fake(store, port)
    try:
        again = call(f"http://127.0.0.1:{port}", "GET", "/_fake/sendgrid/public-key").text.strip()
    finally:
        stop(proc)
    assert again == first
    der = base64.b64decode(first)
    key = serialization.load_der_public_key(der)
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert oct(os.stat(os.path.join(store, "fake_email_sendgrid_key.pem")).st_mode & 0o777) == "0o600"
