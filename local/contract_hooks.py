"""schemathesis hooks for the contract gate (loaded by local/contract.py via SCHEMATHESIS_HOOKS).

One narrow filter: request bodies that are not UTF-8. API Gateway hands such a body to the
function base64-encoded (`isBase64Encoded`), where the Body extractor answers 422; but the local
emulator (`cargo lambda watch`) refuses it before the function runs, with its own 500 page. The
function's handling of arbitrary bytes is covered by shared/tests/properties.rs (parse_json on
any bytes) instead.
"""
import schemathesis


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
