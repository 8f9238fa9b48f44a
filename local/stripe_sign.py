#!/usr/bin/env python3
"""Re-signs a stripe-webhook API Gateway event file with the local webhook secret at the current
time and prints it (for `cargo lambda invoke --data-file`), e.g.

    python3 local/stripe_sign.py events/stripe-webhook/post-webhooks-stripe.json > /tmp/ev.json
    cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port 9000 --data-file /tmp/ev.json stripe-webhook
"""
import hashlib, hmac, json, os, sys, time

secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_local_dev_secret")
event = json.load(open(sys.argv[1]))
t = int(time.time())
mac = hmac.new(secret.encode(), f"{t}.".encode() + event["body"].encode(), hashlib.sha256).hexdigest()
event["headers"]["stripe-signature"] = f"t={t},v1={mac}"
json.dump(event, sys.stdout, indent=2)
print()
