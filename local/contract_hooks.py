"""schemathesis hooks for the contract gate (loaded by local/contract.py via SCHEMATHESIS_HOOKS).

About the local emulator (`cargo lambda watch`) only, never about the functions:

- Request bodies that are not UTF-8: API Gateway hands such a body to the function
  base64-encoded (`isBase64Encoded`) and the Body extractor answers 415/422, but the emulator
  cannot carry one to the function at all. Generated cases with such a body are not sent
  (`filter_case`); the functions' handling of arbitrary bytes is covered by
  shared/tests/properties.rs.
- The emulator's own 500 page (`{"type":"https://httpstatuses.com/500",...}`, text/plain): it
  answers it when it cannot carry a request or a response between HTTP and the function (seen
  for non-UTF-8 bodies, and rarely for a response the function logged as 200). A function's
  own failure never looks like it: ours are problem+json with a `/problems/...` type, and a
  function error or panic comes back as `{"errorType":...,"errorMessage":...}`. Such failures
  are dropped (`filter_failure`) and counted in CONTRACT_EMULATOR_LOG, which local/contract.py
  prints with its figures.

About the generated data, not the functions:

- `Idempotency-Key`: a client sends a fresh key per operation and the same key only to retry
  it. Generated values repeat across unrelated requests, and the same key and body replay the
  first answer (by design, for 24 h) even after the created resource was deleted, which the
  stateful checks would read as "created resource not found". A well-formed key therefore gets
  a unique suffix per request (`before_call`; a long key keeps its first 218 characters, so
  the key stays within 255); malformed ones are sent as generated, so their 422 is still
  checked. Replays are tested in the functions' own tests.
- Empty optional headers: schema-valid cases sometimes carry an optional header with an empty
  value (`If-Match:`), which no header's pattern admits; those cases go without it.
- `cursor`: a list's cursor is one the API returned (`next_cursor`): the document states its
  alphabet and length, but a made-up one that fits them still names no position, and the API
  answers 422 `invalid_cursor`, as it should. Schema-valid (positive) cases therefore go
  without a cursor (`before_call`), so `positive_data_acceptance` judges the other
  parameters; negative cases keep theirs, so malformed cursors are still refused with a 4xx.
  Cursors the API issued are tested in the functions' own tests.
"""
import os
import uuid

import schemathesis

# What cargo-lambda's emulator answers when it cannot turn a request into a Lambda event.
EMULATOR_500 = b'{"type":"https://httpstatuses.com/500","status":500,"title":"Internal Server Error"}'


def _is_utf8(body) -> bool:
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    if isinstance(body, str):
        try:
            body.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


@schemathesis.hook
def filter_case(context, case) -> bool:
    return _is_utf8(getattr(case, "body", None))


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    emulator_page = response.status_code == 500 and response.content.strip() == EMULATOR_500
    if emulator_page:
        log = os.environ.get("CONTRACT_EMULATOR_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{response.request.method} {response.request.url}\n")
    return not emulator_page


def _valid_idempotency_key(value) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= 255 and all(33 <= ord(c) <= 126 for c in value)


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and _valid_idempotency_key(headers[name]):
            # At most 255 characters: a long key keeps its first 218.
            headers[name] = f"{headers[name][:218]}-{uuid.uuid4()}"
    meta = getattr(case, "meta", None)
    positive = meta is not None and meta.generation.mode.is_positive
    # An optional header the generator "leaves out" by sending it empty (`If-Match:`) is
    # left out: an empty value matches no header's pattern, so it is no schema-valid request.
    if positive:
        for name in [n for n, v in headers.items() if v == ""]:
            del headers[name]
    if positive and isinstance(case.query, dict) and "cursor" in case.query:
        del case.query["cursor"]
