"""The contract gate (local/contract.py with local/schemathesis.toml) fails a deliberately broken
route — a 500, an undocumented status — and passes the fixed one.

A tiny API (one operation, bearer auth, problem+json errors) is served here on 127.0.0.1 in three
variants; the gate runs against each with a short time budget.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTRACT = os.path.join(ROOT, "local", "contract.py")
TOKEN = "toy-token"

PROBLEM = {"content": {"application/problem+json": {"schema": {"type": "object"}}}}
DOC = {
    "openapi": "3.1.0",
    "info": {"title": "toy", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/things/{id}": {
            "get": {
                "operationId": "get_thing",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "id", "in": "path", "required": True,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
                ],
                "responses": {
                    "200": {"description": "the thing", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
                        "additionalProperties": False}}}},
                    "401": {"description": "unauthenticated", **PROBLEM},
                    "404": {"description": "no such thing", **PROBLEM},
                    "422": {"description": "bad id", **PROBLEM},
                },
            }
        }
    },
}


def serve(variant: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def problem(self, status: int, headers: dict | None = None):
            body = json.dumps({"type": "about:blank", "title": "problem", "status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) != 2 or parts[0] != "things":
                return self.problem(404)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.problem(401, {"WWW-Authenticate": "Bearer"})
            try:
                thing = int(parts[1])
            except ValueError:
                return self.problem(422)
            if not 1 <= thing <= 100:
                return self.problem(422)
            if thing > 50:
                # the deliberate breakage, or the documented answer
                return self.problem({"server-error": 500, "undocumented": 418}.get(variant, 404))
            body = json.dumps({"id": thing}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def other(self):
            self.problem(405, {"Allow": "GET"})

        def __getattr__(self, name):
            # Any other method (POST, TRACE, QUERY, ...) is not allowed here.
            if name.startswith("do_"):
                return self.other
            raise AttributeError(name)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_gate(variant: str, tmp_path) -> tuple[int, dict, str]:
    server = serve(variant)
    schema = tmp_path / "toy.json"
    schema.write_text(json.dumps(DOC))
    figures = tmp_path / "figures.json"
    try:
        out = subprocess.run(
            [sys.executable, CONTRACT, "--url", f"http://127.0.0.1:{server.server_address[1]}",
             "--schema", str(schema), "--token", TOKEN, "--max-time", "25",
             "--report-dir", str(tmp_path / "report"), "--figures", str(figures)],
            capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False,
        )
    finally:
        server.shutdown()
    return out.returncode, json.loads(figures.read_text()), out.stdout + out.stderr


@pytest.mark.parametrize("variant,code", [("server-error", "ST101"), ("undocumented", "ST103")])
def test_the_gate_fails_a_broken_route(variant, code, tmp_path):
    rc, figures, output = run_gate(variant, tmp_path)
    assert rc != 0, output
    assert figures["unique_failures"] >= 1
    assert code in output, output[-3000:]
    assert "curl -X GET" in output, "a failure prints the reproducing request"


def test_the_gate_passes_the_fixed_route(tmp_path):
    rc, figures, output = run_gate("fixed", tmp_path)
    assert rc == 0, output[-5000:]
    assert figures["operations_fuzzed"] == 1 and figures["cases_run"] > 10
