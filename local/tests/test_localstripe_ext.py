"""localstripe with the local stack's extension (local/localstripe_ext.py): Checkout Sessions,
Billing Portal Sessions, the local "pay" step and its webhook, and the list endpoints the billing
function reads.

The wrapper (local/localstripe_server.py) runs as a subprocess on a free port with its store in a
temporary directory; a webhook receiver (http.server) runs in a thread on another free port.
"""

from __future__ import annotations

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

LOCAL = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(LOCAL, "localstripe_server.py")
KEY = "sk_test_local"
WEBHOOK_SECRET = "whsec_test_ext"


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


class Stripe:
    def __init__(self, base: str):
        self.base = base

    def call(self, method: str, path: str, data: dict | None = None, params: dict | None = None,
             headers: dict | None = None, auth: bool = True):
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        h = {"Authorization": f"Bearer {KEY}"} if auth else {}
        if body is not None:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        h.update(headers or {})
        req = urllib.request.Request(url, data=body, method=method, headers=h)
        try:
            resp = OPENER.open(req, timeout=10)
        except urllib.error.HTTPError as e:
            resp = e
        with resp:
            raw = resp.read().decode()
            ctype = resp.headers.get("Content-Type", "")
            payload = json.loads(raw) if "json" in ctype else raw
            return resp.status, dict(resp.headers), payload

    def ok(self, method: str, path: str, **kw) -> dict:
        status, _, body = self.call(method, path, **kw)
        assert status == 200, (method, path, status, body)
        return body


def start_server(port: int, store: str, from_scratch: bool, log) -> subprocess.Popen:
    args = [sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(port), "--store", store]
    if from_scratch:
        args.append("--from-scratch")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"localstripe_server.py exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("localstripe_server.py did not listen within 15 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Receiver:
    """Collects the webhook POSTs: (headers, raw body)."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, type_: str) -> list[tuple[dict, bytes, dict]]:
        return [(h, b, json.loads(b)) for h, b in list(self.received) if json.loads(b)["type"] == type_]

    def wait_for(self, type_: str, pred, timeout: float = 8.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for h, b, ev in self.events(type_):
                if pred(ev):
                    return h, b, ev
            time.sleep(0.1)
        seen = [json.loads(b)["type"] for _, b in self.received]
        pytest.fail(f"no {type_} webhook within {timeout}s; received {seen}")


def verify_signature(header: str, body: bytes, secret: str) -> bool:
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("localstripe")
    port = free_port()
    with open(tmp / "server.log", "w") as log:
        proc = start_server(port, str(tmp / "state.pickle"), True, log)
    receiver = Receiver()
    stripe = Stripe(f"http://127.0.0.1:{port}")
    try:
        assert stripe.call("POST", "/_config/webhooks/test", auth=False,
                           data={"url": receiver.url, "secret": WEBHOOK_SECRET})[0] == 200
        plan = stripe.ok("POST", "/v1/plans", data={
            "id": "price_ext_pro", "amount": "1500", "currency": "eur", "interval": "month",
            "product[name]": "Pro"})
        yield {"stripe": stripe, "receiver": receiver, "plan": plan, "port": port, "tmp": tmp}
    finally:
        stop_server(proc)
        receiver.server.shutdown()
        receiver.server.server_close()


def new_customer(stripe: Stripe, **fields) -> dict:
    return stripe.ok("POST", "/v1/customers", data={"email": "owner@example.test", **fields})


def session_fields(customer: str, **extra) -> dict:
    return {
        "mode": "subscription", "customer": customer,
        "line_items[0][price]": "price_ext_pro", "line_items[0][quantity]": "2",
        "success_url": "http://app.test/billing/ok?session={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://app.test/billing/cancel",
        "client_reference_id": "tenant-1", "metadata[tenant_id]": "tenant-1",
        "subscription_data[metadata][tenant_id]": "tenant-1", **extra,
    }


# ------------------------------------------------------------------------------------------------
# Checkout Sessions
# ------------------------------------------------------------------------------------------------

def test_checkout_session_create_pay_and_webhook(env):
    stripe, receiver, port = env["stripe"], env["receiver"], env["port"]
    cus = new_customer(stripe)["id"]

    fields = session_fields(cus)
    status, headers, cs = stripe.call("POST", "/v1/checkout/sessions", data=fields,
                                      headers={"Idempotency-Key": "idem-1"})
    assert status == 200, cs
    assert cs["id"].startswith("cs_test_")
    assert cs["object"] == "checkout.session"
    assert cs["url"] == f"http://127.0.0.1:{port}/_local/checkout/{cs['id']}"
    assert (cs["mode"], cs["customer"], cs["client_reference_id"]) == ("subscription", cus, "tenant-1")
    assert (cs["status"], cs["payment_status"], cs["subscription"]) == ("open", "unpaid", None)
    assert cs["metadata"] == {"tenant_id": "tenant-1"}
    assert cs["success_url"] == fields["success_url"] and cs["cancel_url"] == fields["cancel_url"]
    assert cs["expires_at"] == cs["created"] + 24 * 3600
    assert cs["livemode"] is False and "line_items" not in cs
    assert cs["amount_total"] == 3000 and cs["currency"] == "eur"

    # the same Idempotency-Key: the same session; other parameters under it: refused
    status, headers, again = stripe.call("POST", "/v1/checkout/sessions", data=fields,
                                         headers={"Idempotency-Key": "idem-1"})
    assert status == 200 and again == cs
    assert headers.get("Idempotent-Replayed") == "true"
    status, _, err = stripe.call("POST", "/v1/checkout/sessions",
                                 data={**fields, "client_reference_id": "other"},
                                 headers={"Idempotency-Key": "idem-1"})
    assert status == 400 and err["error"]["type"] == "idempotency_error"
    # without a key: a new session
    other = stripe.ok("POST", "/v1/checkout/sessions", data=fields)
    assert other["id"] != cs["id"]

    assert stripe.ok("GET", f"/v1/checkout/sessions/{cs['id']}") == cs

    # the page a browser opens (no key), with its Pay button
    status, _, page = stripe.call("GET", f"/_local/checkout/{cs['id']}", auth=False)
    assert status == 200 and f'action="/_local/checkout/{cs["id"]}/complete"' in page and "Pay" in page

    status, _, done = stripe.call("POST", f"/_local/checkout/{cs['id']}/complete", auth=False)
    assert status == 200, done
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    sub_id = done["subscription"]
    assert sub_id and sub_id.startswith("sub_")
    assert stripe.ok("GET", f"/v1/checkout/sessions/{cs['id']}") == done

    sub = stripe.ok("GET", f"/v1/subscriptions/{sub_id}")
    assert sub["status"] == "active" and sub["customer"] == cus
    assert sub["metadata"] == {"tenant_id": "tenant-1"}
    assert sub["items"]["data"][0]["plan"]["id"] == "price_ext_pro"
    assert sub["items"]["data"][0]["quantity"] == 2
    invoices = stripe.ok("GET", "/v1/invoices", params={"customer": cus})["data"]
    assert [i["subscription"] for i in invoices] == [sub_id]
    assert invoices[0]["status"] == "paid" and invoices[0]["amount_paid"] == 3000

    # paying twice: refused
    status, _, err = stripe.call("POST", f"/_local/checkout/{cs['id']}/complete", auth=False)
    assert status == 400 and "already complete" in err["error"]["message"]

    headers, body, event = receiver.wait_for(
        "checkout.session.completed", lambda ev: ev["data"]["object"]["id"] == cs["id"])
    assert verify_signature(headers["stripe-signature"], body, WEBHOOK_SECRET)
    assert event["object"] == "event" and event["id"].startswith("evt_")
    assert event["data"]["object"]["subscription"] == sub_id
    assert event["data"]["object"]["status"] == "complete"
    assert event["data"]["object"]["metadata"] == {"tenant_id": "tenant-1"}


def test_checkout_page_pay_button_redirects_to_success_url_and_trials_are_trialing(env):
    stripe = env["stripe"]
    cus = new_customer(stripe)["id"]
    cs = stripe.ok("POST", "/v1/checkout/sessions", data=session_fields(
        cus, **{"subscription_data[trial_period_days]": "14"}))
    status, headers, _ = stripe.call("POST", f"/_local/checkout/{cs['id']}/complete", auth=False,
                                     data={"redirect": "1"})
    assert status == 303
    assert headers["Location"] == f"http://app.test/billing/ok?session={cs['id']}"
    done = stripe.ok("GET", f"/v1/checkout/sessions/{cs['id']}")
    assert (done["status"], done["payment_status"]) == ("complete", "no_payment_required")
    sub = stripe.ok("GET", f"/v1/subscriptions/{done['subscription']}")
    assert sub["status"] == "trialing"
    assert sub["trial_end"] - sub["trial_start"] == 14 * 86400


@pytest.mark.parametrize("change, status, param", [
    ({"mode": "payment"}, 400, "mode"),
    ({"mode": None}, 400, "mode"),
    ({"customer": "cus_doesnotexist"}, 404, "customer"),
    ({"line_items[0][price]": "price_doesnotexist"}, 400, "line_items[0][price]"),
    ({"line_items[0][price]": None}, 400, "line_items[0][price]"),
    ({"line_items[0][quantity]": "0"}, 400, "line_items[0][quantity]"),
    ({"success_url": None}, 400, "success_url"),
    ({"cancel_url": None}, 400, "cancel_url"),
    ({"subscription_data[trial_period_days]": "x"}, 400, "subscription_data[trial_period_days]"),
    ({"no_such_param": "1"}, 400, "no_such_param"),
])
def test_checkout_session_refusals(env, change, status, param):
    stripe = env["stripe"]
    if "refusal_customer" not in env:
        env["refusal_customer"] = new_customer(stripe)["id"]
    cus = env["refusal_customer"]
    fields = {k: v for k, v in {**session_fields(cus), **change}.items() if v is not None}
    got, _, body = stripe.call("POST", "/v1/checkout/sessions", data=fields)
    assert got == status, body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param
    if param == "customer":
        assert body["error"]["message"].startswith("No such customer")


def test_checkout_session_lookups(env):
    stripe = env["stripe"]
    status, _, body = stripe.call("GET", "/v1/checkout/sessions/cs_test_nope")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"
    assert stripe.call("POST", "/_local/checkout/cs_test_nope/complete", auth=False)[0] == 404
    assert stripe.call("GET", "/_local/checkout/cs_test_nope", auth=False)[0] == 404
    # the /v1 API still wants a key
    assert stripe.call("POST", "/v1/checkout/sessions", auth=False, data={})[0] == 401

    cus = new_customer(stripe)["id"]
    cs = stripe.ok("POST", "/v1/checkout/sessions", data=session_fields(cus))
    expired = stripe.ok("POST", f"/v1/checkout/sessions/{cs['id']}/expire")
    assert (expired["status"], expired["url"]) == ("expired", None)
    assert stripe.call("POST", f"/_local/checkout/{cs['id']}/complete", auth=False)[0] == 400


# ------------------------------------------------------------------------------------------------
# Billing Portal Sessions
# ------------------------------------------------------------------------------------------------

def test_billing_portal_session(env):
    stripe, port = env["stripe"], env["port"]
    cus = new_customer(stripe, name="Portal Person")["id"]
    bps = stripe.ok("POST", "/v1/billing_portal/sessions",
                    data={"customer": cus, "return_url": "http://app.test/settings"})
    assert bps["id"].startswith("bps_") and bps["object"] == "billing_portal.session"
    assert (bps["customer"], bps["return_url"], bps["livemode"]) == (cus, "http://app.test/settings", False)
    assert bps["url"] == f"http://127.0.0.1:{port}/_local/billing_portal/{bps['id']}"
    assert isinstance(bps["created"], int)
    assert stripe.ok("POST", "/v1/billing_portal/sessions", data={"customer": cus})["return_url"] is None

    status, _, page = stripe.call("GET", f"/_local/billing_portal/{bps['id']}", auth=False)
    assert status == 200 and cus in page and "Portal Person" in page

    status, _, body = stripe.call("POST", "/v1/billing_portal/sessions", data={"customer": "cus_nope"})
    assert status == 404 and body["error"]["param"] == "customer"
    assert body["error"]["message"].startswith("No such customer")
    status, _, body = stripe.call("POST", "/v1/billing_portal/sessions", data={})
    assert status == 400 and body["error"]["param"] == "customer"


# ------------------------------------------------------------------------------------------------
# the list endpoints the billing function reads
# ------------------------------------------------------------------------------------------------

def test_list_endpoints(env):
    stripe = env["stripe"]
    since = int(time.time()) - 1
    cus = new_customer(stripe)["id"]
    cs = stripe.ok("POST", "/v1/checkout/sessions", data=session_fields(cus))
    sub_id = stripe.ok("POST", f"/_local/checkout/{cs['id']}/complete", auth=False)["subscription"]
    stripe.ok("DELETE", f"/v1/subscriptions/{sub_id}")  # canceled

    everything = stripe.ok("GET", "/v1/subscriptions", params={"status": "all", "customer": cus})
    assert [s["id"] for s in everything["data"]] == [sub_id]
    assert everything["data"][0]["status"] == "canceled"
    assert stripe.ok("GET", "/v1/subscriptions", params={"customer": cus})["data"] == []

    items = stripe.ok("GET", "/v1/subscription_items", params={"subscription": sub_id})
    assert [i["plan"]["id"] for i in items["data"]] == ["price_ext_pro"]

    invoices = stripe.ok("GET", "/v1/invoices", params={"customer": cus, "limit": "1"})
    assert len(invoices["data"]) == 1 and invoices["has_more"] is False
    lines = stripe.ok("GET", f"/v1/invoices/{invoices['data'][0]['id']}/lines")
    assert lines["data"][0]["subscription"] == sub_id and lines["data"][0]["amount"] == 3000

    customers = stripe.ok("GET", "/v1/customers", params={"limit": "1"})
    assert len(customers["data"]) == 1 and customers["has_more"] is True
    nxt = stripe.ok("GET", "/v1/customers", params={"limit": "1",
                                                    "starting_after": customers["data"][0]["id"]})
    assert nxt["data"][0]["id"] != customers["data"][0]["id"]

    events = stripe.ok("GET", "/v1/events", params={"created[gt]": str(since), "limit": "100"})
    types = [e["type"] for e in events["data"]]
    assert "checkout.session.completed" in types and "customer.subscription.deleted" in types
    assert all(e["created"] > since for e in events["data"])

    # an unknown list parameter is a 400, not a 500
    status, _, body = stripe.call("GET", "/v1/invoices", params={"status": "paid"})
    assert status == 400 and body["error"]["message"] == "Unexpected status"


def test_sessions_survive_a_restart(tmp_path):
    store = str(tmp_path / "state.pickle")
    port = free_port()
    with open(tmp_path / "server.log", "w") as log:
        proc = start_server(port, store, True, log)
        try:
            stripe = Stripe(f"http://127.0.0.1:{port}")
            stripe.ok("POST", "/v1/plans", data={"id": "price_ext_pro", "amount": "1500",
                                                 "currency": "eur", "interval": "month",
                                                 "product[name]": "Pro"})
            cs = stripe.ok("POST", "/v1/checkout/sessions",
                           data=session_fields(new_customer(stripe)["id"]))
        finally:
            stop_server(proc)
        proc = start_server(port, store, False, log)
        try:
            assert stripe.ok("GET", f"/v1/checkout/sessions/{cs['id']}") == cs
            done = stripe.ok("POST", f"/_local/checkout/{cs['id']}/complete", auth=False)
            assert done["status"] == "complete"
        finally:
            stop_server(proc)
