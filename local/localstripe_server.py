#!/usr/bin/env python3
"""Serve localstripe on 127.0.0.1 with its state in a file of the local stack's own, extended with
Checkout Sessions and Billing Portal Sessions.

localstripe's own `localstripe` command binds `::` (all interfaces) and pickles its store to the
fixed path /tmp/localstripe.pickle. This wrapper serves the same aiohttp app
(`localstripe.server.app`) on the given host only and points the store's load/dump at --store.

Before serving, local/localstripe_ext.py (`install(app)`) adds what localstripe lacks, in Stripe's
wire format and in localstripe's store (so it is saved with the rest of the state):
- POST /v1/checkout/sessions (mode=subscription; a "price" is a localstripe plan id),
  GET /v1/checkout/sessions/{id}, POST /v1/checkout/sessions/{id}/expire;
- POST /v1/billing_portal/sessions;
- key-less local pages: GET /_local/checkout/{id} (a "Pay" button), POST
  /_local/checkout/{id}/complete (the customer pays: a 4242 card, a subscription, the session
  complete, webhook checkout.session.completed), GET /_local/billing_portal/{id};
- GET /v1/subscription_items?subscription=sub_... (localstripe refuses that filter), and a 400
  instead of a 500 for an unknown query parameter on the subscription, invoice, ... lists.

    python3 local/localstripe_server.py [--host 127.0.0.1] [--port 8420]
                                        [--store local/.state/localstripe.pickle] [--from-scratch]
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument(
        "--store",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".state", "localstripe.pickle"),
    )
    parser.add_argument("--from-scratch", action="store_true", help="ignore the saved state")
    args = parser.parse_args(argv)

    from aiohttp import web
    from localstripe import resources, server

    # Imported before the state is loaded: the pickle refers to its classes by module name.
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import localstripe_ext

    store_path = os.path.abspath(args.store)
    os.makedirs(os.path.dirname(store_path), exist_ok=True)
    loading = {"on": False}

    def try_load_from_disk(self) -> None:
        try:
            with open(store_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        # Unpickling a dict subclass calls __setitem__, which would dump a half-loaded store.
        loading["on"] = True
        try:
            old = pickle.loads(data)
            dict.clear(self)
            dict.update(self, old)
        except Exception as e:  # noqa: BLE001 - a corrupt store must not stop the server
            print(f"localstripe: ignoring unreadable state {store_path}: {e}", file=sys.stderr)
        finally:
            loading["on"] = False

    def dump_to_disk(self) -> None:
        if loading["on"]:
            return
        tmp = store_path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, store_path)

    resources.Store.try_load_from_disk = try_load_from_disk
    resources.Store.dump_to_disk = dump_to_disk

    if not args.from_scratch:
        resources.store.try_load_from_disk()
    localstripe_ext.install(server.app)

    logger = logging.getLogger("aiohttp.access")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler())
    print(f"localstripe on http://{args.host}:{args.port} (state: {store_path})", flush=True)
    web.run_app(server.app, host=args.host, port=args.port, access_log=logger, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
