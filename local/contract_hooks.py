"""schemathesis hooks for the contract gate (loaded by local/contract.py via SCHEMATHESIS_HOOKS).

About one thing only: request bodies that are not UTF-8. API Gateway hands such a body to the
function base64-encoded (`isBase64Encoded`), and the Body extractor answers 415/422; but the
local emulator (`cargo lambda watch`) cannot carry one to the function at all and answers its
own 500 page before the function runs. So:

- generated cases with such a body are not sent (`filter_case`);
- a 500 that is the emulator's own page, for a request whose body is not UTF-8 (the checks that
  send other media types build those bodies themselves), is not the API's failure
  (`filter_failure`). A 500 from the functions is never dropped: theirs are problem+json.

The functions' handling of arbitrary bytes is covered by shared/tests/properties.rs.
"""
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
    sent = getattr(response.request, "body", None)
    return not (emulator_page and not _is_utf8(sent))
