"""Checkout Sessions and Billing Portal Sessions for localstripe, in Stripe's wire format.

localstripe (PyPI `localstripe`) has neither. `install(app)` adds them to localstripe's aiohttp app
(`localstripe.server.app`) before it starts; local/localstripe_server.py calls it. The sessions are
StripeObjects in localstripe's own store (so they are pickled with the rest of the state), requests
go through localstripe's auth check (any `sk_...` key) and form parsing (bracket notation), errors
are localstripe's UserError (`{"error": {"type": "invalid_request_error", "message", "param"}}`),
and webhooks go out through localstripe's Event + schedule_webhook, with its signature.

Stripe API (Authorization: Bearer sk_...):
    POST /v1/checkout/sessions                 mode=subscription, customer, line_items[0][price]
                                               (a localstripe plan id), line_items[0][quantity],
                                               success_url, cancel_url, client_reference_id,
                                               metadata[k], subscription_data[metadata][k],
                                               subscription_data[trial_period_days];
                                               Idempotency-Key honoured
    GET  /v1/checkout/sessions/{id}
    POST /v1/checkout/sessions/{id}/expire     an open session -> expired
    POST /v1/billing_portal/sessions           customer, return_url; Idempotency-Key honoured

Local pages (no key needed, for a browser or a test):
    GET  /_local/checkout/{id}                 a page with a "Pay" button
    POST /_local/checkout/{id}/complete        "the customer pays": card 4242 4242 4242 4242 on the
                                               customer, a subscription on the price, the session
                                               complete, event checkout.session.completed; answers
                                               the session (or, from the page, 303 to success_url)
    GET  /_local/billing_portal/{id}           a page naming the customer and its subscriptions

It also makes `GET /v1/subscription_items?subscription=sub_...` work (localstripe answers 400
"Unexpected subscription": Stripe requires that filter), and makes the lists of subscriptions,
invoices, invoice items, charges, payment methods and refunds answer an unknown query parameter
(`ending_before`, `status` on invoices, ...) with localstripe's usual 400 "Unexpected <name>"
instead of a 500.

Known Stripe parameters this does not model are accepted and ignored; unknown ones are refused
with Stripe's "Received unknown parameter" (400), as Stripe does.
"""

from __future__ import annotations

import html
import inspect
import json
import time

from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError
from localstripe.resources import (Card, Customer, Event, List, Plan, StripeObject, Subscription,
                                   SubscriptionItem, Token, store, try_convert_to_int)
from localstripe.webhooks import schedule_webhook

TEST_CARD = "4242424242424242"
SESSION_LIFETIME = 24 * 3600

# Checkout Session create parameters Stripe knows and this does not model: accepted, ignored.
CHECKOUT_IGNORED = {
    "adaptive_pricing", "after_expiration", "allow_promotion_codes", "automatic_tax",
    "billing_address_collection", "branding_settings", "consent_collection", "currency",
    "custom_fields", "custom_text", "customer_creation", "customer_email", "customer_update",
    "discounts", "excluded_payment_method_types", "expires_at", "invoice_creation", "locale",
    "name_collection", "optional_items", "origin_context", "payment_intent_data",
    "payment_method_collection", "payment_method_configuration", "payment_method_data",
    "payment_method_options", "payment_method_types", "permissions", "phone_number_collection",
    "redirect_on_completion", "return_url", "saved_payment_method_options", "setup_intent_data",
    "shipping_address_collection", "shipping_options", "submit_type", "tax_id_collection",
    "ui_mode", "wallet_options",
}
SUBSCRIPTION_DATA_IGNORED = {
    "application_fee_percent", "billing_cycle_anchor", "billing_mode", "default_tax_rates",
    "description", "invoice_settings", "on_behalf_of", "proration_behavior", "transfer_data",
    "trial_settings", "missing_payment_method",
}
LINE_ITEM_IGNORED = {"adjustable_quantity", "dynamic_tax_rates", "tax_rates"}
PORTAL_IGNORED = {"configuration", "flow_data", "locale", "on_behalf_of"}


# ------------------------------------------------------------------------------------------------
# errors and parameter checks
# ------------------------------------------------------------------------------------------------

def bad(message: str, param: str | None = None, status: int = 400, code: str | None = None):
    contents = {}
    if param is not None:
        contents["param"] = param
    if code is not None:
        contents["code"] = code
    return UserError(status, message, contents)


def missing(param: str) -> UserError:
    return bad(f"Missing required param: {param}.", param, code="parameter_missing")


def unknown(param: str) -> UserError:
    return bad(f"Received unknown parameter: {param}", param, code="parameter_unknown")


def no_such(kind: str, id, param: str | None, status: int = 404) -> UserError:
    return bad(f"No such {kind}: '{id}'", param, status, code="resource_missing")


def as_str(data: dict, key: str, param: str | None = None, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise missing(param or key)
        return None
    if not isinstance(value, str):
        raise bad(f"Invalid string: {param or key}", param or key)
    return value


def as_url(data: dict, key: str, required: bool) -> str | None:
    value = as_str(data, key, required=required)
    if value is not None and not value.startswith(("http://", "https://")):
        raise bad("Not a valid URL", key, code="url_invalid")
    return value


def as_metadata(value, param: str) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, list):  # metadata[0]=x comes out of localstripe's parser as a list
        value = {str(i): v for i, v in enumerate(value)}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad(f"Invalid hash: {param}", param)
    return {k: v for k, v in value.items() if v != ""}


def as_positive_int(value, param: str, low: int = 1, high: int | None = None) -> int:
    number = try_convert_to_int(value)
    if type(number) is not int or number < low or (high is not None and number > high):
        limits = f"at least {low}" + (f" and at most {high}" if high is not None else "")
        raise bad(f"Invalid integer: {param} must be {limits}", param)
    return number


def check_known(data: dict, handled: set[str], ignored: set[str], prefix: str = "") -> None:
    for key in data:
        if key not in handled and key not in ignored:
            raise unknown(f"{prefix}[{key}]" if prefix else key)


def fingerprint_params(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def stored(cls) -> list:
    prefix = cls.object + ":"
    return [v for k, v in list(store.items()) if k.startswith(prefix)]


def base_url(request: web.Request) -> str:
    return f"http://{request.host}"


# ------------------------------------------------------------------------------------------------
# idempotency (Stripe: same key + same parameters -> the first response again)
# ------------------------------------------------------------------------------------------------

def idempotent_replay(request: web.Request, cls, data: dict):
    """The first response for this Idempotency-Key on this endpoint, or None if it is new."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    for obj in stored(cls):
        if getattr(obj, "_idempotency_key", None) == key:
            if obj._idempotency_params != fingerprint_params(data):
                error = UserError(400, (
                    "Keys for idempotent requests can only be used with the same parameters they "
                    f"were first used with. Try using a key other than '{key}' if you meant to "
                    "execute a different request."))
                error.body["error"]["type"] = "idempotency_error"
                raise error
            return server.json_response(obj._idempotency_response,
                                        headers={"Idempotent-Replayed": "true"})
    return None


def remember_idempotency(request: web.Request, obj, data: dict) -> dict:
    body = obj._export()
    key = request.headers.get("Idempotency-Key")
    if key:
        obj._idempotency_key = key
        obj._idempotency_params = fingerprint_params(data)
        obj._idempotency_response = body
    return body


# ------------------------------------------------------------------------------------------------
# Checkout Sessions
# ------------------------------------------------------------------------------------------------

class CheckoutSession(StripeObject):
    """A Checkout Session in mode=subscription. Public attributes are the wire fields."""

    object = "checkout.session"
    _id_prefix = "cs_test_"

    def __init__(self, *, base: str, customer: str, price: str, quantity: int, success_url: str,
                 cancel_url: str | None, client_reference_id: str | None, metadata: dict,
                 subscription_metadata: dict, trial_period_days: int | None):
        plan = Plan._api_retrieve(price)
        super().__init__()  # stores it
        self.mode = "subscription"
        self.customer = customer
        self.client_reference_id = client_reference_id
        self.status = "open"
        self.payment_status = "unpaid"
        self.subscription = None
        self.metadata = metadata
        self.success_url = success_url
        self.cancel_url = cancel_url
        self.expires_at = self.created + SESSION_LIFETIME
        self.currency = plan.currency
        self.amount_subtotal = plan.amount * quantity if plan.amount is not None else None
        self.amount_total = self.amount_subtotal
        self.url = f"{base}/_local/checkout/{self.id}"
        self._price = price
        self._quantity = quantity
        self._subscription_metadata = subscription_metadata
        self._trial_period_days = trial_period_days
        self._idempotency_key = None

    def _expire_if_due(self) -> None:
        if self.status == "open" and time.time() >= self.expires_at:
            self._expire()

    def _expire(self) -> None:
        self.status = "expired"
        self.url = None
        schedule_webhook(Event("checkout.session.expired", self))


def get_session(id: str) -> CheckoutSession:
    obj = store.get(CheckoutSession.object + ":" + id)
    if obj is None:
        raise no_such("checkout.session", id, "id")
    obj._expire_if_due()
    return obj


def get_customer(id, param: str | None = "customer") -> Customer:
    obj = store.get(Customer.object + ":" + id) if isinstance(id, str) else None
    if obj is None:
        raise no_such("customer", id, param)
    return obj


async def create_checkout_session(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    data.pop("expand", None)
    replay = idempotent_replay(request, CheckoutSession, data)
    if replay is not None:
        return replay

    check_known(data, {"mode", "customer", "line_items", "success_url", "cancel_url",
                       "client_reference_id", "metadata", "subscription_data"}, CHECKOUT_IGNORED)

    mode = as_str(data, "mode", required=True)
    if mode not in ("payment", "setup", "subscription"):
        raise bad("Invalid mode: must be one of payment, setup, or subscription", "mode")
    if mode != "subscription":
        raise bad(f"The local stack's Checkout only supports mode=subscription, not {mode}.",
                  "mode")

    success_url = as_url(data, "success_url", required=True)
    cancel_url = as_url(data, "cancel_url", required=True)
    client_reference_id = as_str(data, "client_reference_id")
    if client_reference_id is not None and len(client_reference_id) > 200:
        raise bad("client_reference_id must be at most 200 characters", "client_reference_id")
    metadata = as_metadata(data.get("metadata"), "metadata")

    line_items = data.get("line_items")
    if line_items is None or line_items == "":
        raise missing("line_items")
    if not isinstance(line_items, list) or not all(isinstance(i, dict) for i in line_items):
        raise bad("Invalid array: line_items", "line_items")
    if len(line_items) != 1:
        raise bad("The local stack's Checkout supports exactly one line item (localstripe "
                  "subscriptions have one item).", "line_items")
    item = line_items[0]
    check_known(item, {"price", "quantity"}, LINE_ITEM_IGNORED | {"price_data"}, "line_items[0]")
    if "price_data" in item:
        raise bad("line_items[0][price_data] is not supported locally; pass a price (a "
                  "localstripe plan id).", "line_items[0][price_data]")
    price = as_str(item, "price", "line_items[0][price]", required=True)
    if store.get(Plan.object + ":" + price) is None:
        raise no_such("price", price, "line_items[0][price]", status=400)
    quantity = 1
    if item.get("quantity") not in (None, ""):
        quantity = as_positive_int(item["quantity"], "line_items[0][quantity]")

    sub_data = data.get("subscription_data")
    if sub_data in (None, ""):
        sub_data = {}
    if not isinstance(sub_data, dict):
        raise bad("Invalid hash: subscription_data", "subscription_data")
    check_known(sub_data, {"metadata", "trial_period_days", "trial_end"},
                SUBSCRIPTION_DATA_IGNORED, "subscription_data")
    if sub_data.get("trial_end") not in (None, ""):
        raise bad("subscription_data[trial_end] is not supported locally; use "
                  "subscription_data[trial_period_days].", "subscription_data[trial_end]")
    sub_metadata = as_metadata(sub_data.get("metadata"), "subscription_data[metadata]")
    trial_days = None
    if sub_data.get("trial_period_days") not in (None, ""):
        trial_days = as_positive_int(sub_data["trial_period_days"],
                                     "subscription_data[trial_period_days]", 1, 730)

    customer = as_str(data, "customer", required=True)
    get_customer(customer)

    session = CheckoutSession(
        base=base_url(request), customer=customer, price=price, quantity=quantity,
        success_url=success_url, cancel_url=cancel_url, client_reference_id=client_reference_id,
        metadata=metadata, subscription_metadata=sub_metadata, trial_period_days=trial_days)
    return server.json_response(remember_idempotency(request, session, data))


async def retrieve_checkout_session(request: web.Request) -> web.Response:
    return server.json_response(get_session(request.match_info["id"])._export())


async def expire_checkout_session(request: web.Request) -> web.Response:
    session = get_session(request.match_info["id"])
    if session.status != "open":
        raise bad(f"Only Checkout Sessions with a status in [\"open\"] can be expired. This "
                  f"Checkout Session has a status of \"{session.status}\".")
    session._expire()
    return server.json_response(session._export())


def give_working_card(customer: Customer) -> None:
    """Make card 4242 4242 4242 4242 the customer's default source (reusing one it already has)."""
    for source in customer.sources._list:
        if isinstance(source, Card) and getattr(source, "_card_number", None) == TEST_CARD:
            customer.default_source = source.id
            return
    year = time.gmtime().tm_year + 5
    token = Token(card={"number": TEST_CARD, "exp_month": "12", "exp_year": str(year),
                        "cvc": "123"})
    card = Customer._api_add_source(customer.id, source=token.id)
    customer.default_source = card.id


def complete_session(session: CheckoutSession) -> CheckoutSession:
    if session.status == "complete":
        raise bad(f"Checkout Session {session.id} is already complete.")
    if session.status != "open":
        raise bad(f"Checkout Session {session.id} is {session.status} and can no longer be "
                  "completed.")
    customer = get_customer(session.customer)
    if store.get(Plan.object + ":" + session._price) is None:
        raise no_such("price", session._price, None, status=400)

    give_working_card(customer)
    kwargs = {}
    if session._trial_period_days:
        kwargs["trial_period_days"] = session._trial_period_days
    sub = Subscription(customer=customer.id, metadata=dict(session._subscription_metadata),
                       items=[{"plan": session._price, "quantity": session._quantity}], **kwargs)
    if session._trial_period_days:
        # localstripe leaves a trial subscription "incomplete" with no trial dates; Stripe makes it
        # "trialing" (and the customer.subscription.created event, still unsent, says so too).
        now = int(time.time())
        sub.status = "trialing"
        sub.trial_start = now
        sub.trial_end = now + session._trial_period_days * 86400
        for ev in stored(Event):
            if ev.type == "customer.subscription.created" and ev.data["object"].get("id") == sub.id:
                ev.data = {"object": sub._export()}

    session.status = "complete"
    session.payment_status = "no_payment_required" if session._trial_period_days else "paid"
    session.subscription = sub.id
    session.url = None
    schedule_webhook(Event("checkout.session.completed", session))
    return session


async def complete_checkout_page(request: web.Request) -> web.Response:
    session = get_session(request.match_info["id"])
    form = await server.get_post_data(request, remove_auth=False) or {}
    complete_session(session)
    if form.get("redirect") in ("1", "true"):
        raise web.HTTPSeeOther(session.success_url.replace("{CHECKOUT_SESSION_ID}", session.id))
    return server.json_response(session._export())


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}button{{font-size:1.2em}}</style>
</head><body><h1>{title}</h1>{body}<p><small>local stack (localstripe)</small></p></body></html>
"""


def page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(text=PAGE.format(title=html.escape(title), body=body), status=status,
                        content_type="text/html")


async def checkout_page(request: web.Request) -> web.Response:
    id = request.match_info["id"]
    session = store.get(CheckoutSession.object + ":" + id)
    if session is None:
        return page("Checkout", f"<p>No such Checkout Session: {html.escape(id)}</p>", 404)
    session._expire_if_due()
    customer = store.get(Customer.object + ":" + session.customer)
    plan = store.get(Plan.object + ":" + session._price)
    who = html.escape((customer and (customer.email or customer.name)) or session.customer)
    what = html.escape(session._price)
    if plan is not None:
        what = html.escape(f"{plan.name or plan.id} ({plan.id})")
    amount = ""
    if session.amount_total is not None:
        amount = (f"{session.amount_total / 100:.2f} {html.escape(str(session.currency).upper())}"
                  f" every {html.escape(plan.interval) if plan else 'period'}")
    trial = (f"<p>Trial: {session._trial_period_days} days</p>"
             if session._trial_period_days else "")
    body = (f"<p>Customer: {who}</p><p>Subscription: {what} &times; {session._quantity}</p>"
            f"<p>{amount}</p>{trial}")
    if session.status == "open":
        action = f"/_local/checkout/{html.escape(session.id)}/complete"
        body += (f'<form method="post" action="{action}">'
                 '<input type="hidden" name="redirect" value="1">'
                 '<button type="submit">Pay</button></form>'
                 f'<p><a href="{html.escape(session.cancel_url)}">Cancel</a></p>')
    else:
        body += f"<p>This Checkout Session is {html.escape(session.status)}.</p>"
    return page("Checkout", body)


# ------------------------------------------------------------------------------------------------
# Billing Portal Sessions
# ------------------------------------------------------------------------------------------------

class BillingPortalSession(StripeObject):
    object = "billing_portal.session"
    _id_prefix = "bps_"

    def __init__(self, *, base: str, customer: str, return_url: str | None):
        super().__init__()
        self.customer = customer
        self.return_url = return_url
        self.url = f"{base}/_local/billing_portal/{self.id}"
        self.configuration = None
        self.flow = None
        self.locale = None
        self.on_behalf_of = None
        self._idempotency_key = None


async def create_portal_session(request: web.Request) -> web.Response:
    data = await server.get_post_data(request) or {}
    data.pop("expand", None)
    replay = idempotent_replay(request, BillingPortalSession, data)
    if replay is not None:
        return replay
    check_known(data, {"customer", "return_url"}, PORTAL_IGNORED)
    customer = as_str(data, "customer", required=True)
    return_url = as_url(data, "return_url", required=False)
    get_customer(customer)
    session = BillingPortalSession(base=base_url(request), customer=customer,
                                   return_url=return_url)
    return server.json_response(remember_idempotency(request, session, data))


async def portal_page(request: web.Request) -> web.Response:
    id = request.match_info["id"]
    session = store.get(BillingPortalSession.object + ":" + id)
    if session is None:
        return page("Billing portal", f"<p>No such billing portal session: {html.escape(id)}</p>",
                    404)
    customer = store.get(Customer.object + ":" + session.customer)
    name = session.customer
    if customer is not None and (customer.name or customer.email):
        name = f"{customer.name or customer.email} ({session.customer})"
    rows = "".join(
        f"<li>{html.escape(s.id)}: {html.escape(s.plan.id)} &times; {s.quantity}, "
        f"{html.escape(s.status)}</li>"
        for s in stored(Subscription) if s.customer == session.customer)
    body = (f"<p>Customer: {html.escape(name)}</p>"
            f"<p>Subscriptions:</p><ul>{rows or '<li>none</li>'}</ul>")
    if session.return_url:
        body += f'<p><a href="{html.escape(session.return_url)}">Return</a></p>'
    return page("Billing portal", body)


# ------------------------------------------------------------------------------------------------
# localstripe fixes
# ------------------------------------------------------------------------------------------------

def list_subscription_items(cls, url, subscription=None, limit=None, starting_after=None,
                            **kwargs):
    """Stripe's `GET /v1/subscription_items?subscription=sub_...` (localstripe refuses the filter)."""
    if kwargs:
        raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
    li = List(url, limit=limit, starting_after=starting_after)
    if subscription is None:
        li._list = stored(SubscriptionItem)
    else:
        if not isinstance(subscription, str):
            raise bad("Invalid string: subscription", "subscription")
        sub = store.get(Subscription.object + ":" + subscription)
        if sub is None:
            raise no_such("subscription", subscription, "subscription")
        li._list = list(sub.items._list)
    return li


def refuse_unknown_list_params(cls) -> None:
    """A list whose _api_list_all takes no **kwargs answers 500 (a TypeError) to an unknown query
    parameter (`?ending_before=`, `?status=` on invoices...); make it localstripe's usual 400."""
    original = cls.__dict__["_api_list_all"].__func__
    known = set(inspect.signature(original).parameters) - {"cls", "url"}

    def _api_list_all(klass, url, **kwargs):
        extra = [k for k in kwargs if k not in known]
        if extra:
            raise UserError(400, "Unexpected " + ", ".join(extra))
        return original(klass, url, **kwargs)

    cls._api_list_all = classmethod(_api_list_all)


@web.middleware
async def auth_middleware(request: web.Request, handler):
    """localstripe's key check, except for the /_local/ pages a browser opens."""
    if request.path.startswith("/_local/"):
        return await handler(request)
    return await server.auth_middleware(request, handler)


_installed = False


def install(app: web.Application) -> None:
    """Add the routes to localstripe's app (before it starts) and apply the fixes. Once only."""
    global _installed
    if _installed:
        return
    _installed = True
    middlewares = app.middlewares
    for i, mw in enumerate(middlewares):
        if mw is server.auth_middleware:
            middlewares[i] = auth_middleware

    resources.SubscriptionItem._api_list_all = classmethod(list_subscription_items)
    for cls in (resources.Charge, resources.Invoice, resources.InvoiceItem,
                resources.PaymentMethod, resources.Refund, resources.Subscription):
        params = inspect.signature(cls.__dict__["_api_list_all"].__func__).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            refuse_unknown_list_params(cls)

    app.router.add_post("/v1/checkout/sessions", create_checkout_session)
    app.router.add_get("/v1/checkout/sessions/{id}", retrieve_checkout_session)
    app.router.add_post("/v1/checkout/sessions/{id}/expire", expire_checkout_session)
    app.router.add_post("/v1/billing_portal/sessions", create_portal_session)
    app.router.add_get("/_local/checkout/{id}", checkout_page)
    app.router.add_post("/_local/checkout/{id}/complete", complete_checkout_page)
    app.router.add_get("/_local/billing_portal/{id}", portal_page)
