"""template.yaml and the `cargo lambda watch` router in Cargo.toml serve the same HTTP routes.

Run: python3 -m pytest local/tests/test_router.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "local", "router.py")
TEMPLATE = os.path.join(ROOT, "template.yaml")
CARGO = os.path.join(ROOT, "Cargo.toml")

sys.path.insert(0, os.path.join(ROOT, "local"))
import router  # noqa: E402


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_check_passes_for_the_repository():
    result = run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")


def test_template_declares_the_settings_and_api_docs_routes():
    # One route per path with Method ANY: the function answers each method openapi.json lists
    # and a problem+json 405 for the others.
    routes = {(r.method, r.path): r.function for r in router.template_routes(TEMPLATE)}
    assert routes[("ANY", "/me")] == "settings"
    assert routes[("ANY", "/invitations/{token}/accept")] == "settings"
    assert routes[("ANY", "/settings/team/members/{user_id}")] == "settings"
    assert routes[("ANY", "/settings/team/invitations/{id}")] == "settings"
    assert routes[("ANY", "/openapi.json")] == "api-docs"
    assert len(routes) == len(router.template_routes(TEMPLATE)), "a (method, path) is declared twice"


def openapi_operations():
    with open(os.path.join(ROOT, "openapi.json"), encoding="utf-8") as f:
        doc = json.load(f)
    for path, item in doc["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                yield method.upper(), path


def test_every_documented_path_is_routed_and_every_route_is_documented():
    routed = {r.path for r in router.template_routes(TEMPLATE)}
    documented = {path for _, path in openapi_operations()}
    assert documented == routed, f"only documented: {documented - routed}; only routed: {routed - documented}"


def test_print_is_the_table_in_cargo_toml():
    result = run("print")
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)["workspace"]["metadata"]["lambda"]["watch"]["router"]
    with open(CARGO, "rb") as f:
        committed = tomllib.load(f)["workspace"]["metadata"]["lambda"]["watch"]["router"]
    norm = lambda table: {p: sorted(map(str, v)) if isinstance(v, list) else v for p, v in table.items()}  # noqa: E731
    assert norm(printed) == norm(committed)


@pytest.fixture
def altered_template(tmp_path):
    """A copy of template.yaml with one route's method changed and one route removed."""
    with open(TEMPLATE, encoding="utf-8") as f:
        text = f.read()
    changed = "Properties: { ApiId: !Ref HttpApi, Method: ANY, Path: /me }"
    removed = '''        ApiReferencePage:
          Type: HttpApi
          Properties: { ApiId: !Ref HttpApi, Method: ANY, Path: /docs }
'''
    assert changed in text and removed in text, "the template moved on: update this fixture"
    text = text.replace(changed, changed.replace("ANY", "PUT")).replace(removed, "")
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_fails_and_names_every_difference_when_the_template_changes(altered_template):
    result = run("check", "--template", str(altered_template))
    assert result.returncode == 1
    out = result.stdout
    assert "missing from Cargo.toml router: PUT /me -> settings" in out
    assert "not in template.yaml: ANY /me -> settings" in out
    assert "not in template.yaml: ANY /docs -> api-docs" in out
    assert "disagree (3)" in out


def test_check_fails_when_the_router_points_at_another_function(tmp_path):
    with open(CARGO, encoding="utf-8") as f:
        text = f.read()
    line = '"/health" = "api-docs"'
    assert line in text
    cargo = tmp_path / "Cargo.toml"
    cargo.write_text(text.replace(line, line.replace("api-docs", "settings")), encoding="utf-8")
    result = run("check", "--cargo", str(cargo))
    assert result.returncode == 1
    assert "different function for ANY /health: template.yaml api-docs, Cargo.toml router settings" in result.stdout


def test_write_regenerates_the_table_and_keeps_the_rest_of_cargo_toml(tmp_path):
    with open(CARGO, encoding="utf-8") as f:
        text = f.read()
    head, sep, _ = text.partition(router.ROUTER_HEADER)
    assert sep
    cargo = tmp_path / "Cargo.toml"
    cargo.write_text(head + sep + "\n", encoding="utf-8")  # the table emptied
    assert run("check", "--cargo", str(cargo)).returncode == 1
    assert run("write", "--cargo", str(cargo)).returncode == 0
    assert run("check", "--cargo", str(cargo)).returncode == 0
    assert cargo.read_text(encoding="utf-8").startswith(head + sep)


def test_any_method_becomes_a_plain_string_route(tmp_path):
    shutil.copy(TEMPLATE, tmp_path / "template.yaml")
    text = (tmp_path / "template.yaml").read_text(encoding="utf-8")
    text = text.replace("Method: ANY, Path: /health", "Method: GET, Path: /health")
    (tmp_path / "template.yaml").write_text(text, encoding="utf-8")
    table = router.render_table(router.template_routes(str(tmp_path / "template.yaml")))
    assert '"/health" = [{ method = "GET", function = "api-docs" }]' in table
    table = router.render_table(router.template_routes(TEMPLATE))
    assert '"/health" = "api-docs"' in table


def event_file(route: router.Route) -> str:
    """events/<function>/<method>-<path segments>.json, e.g. events/settings/get-me.json."""
    segments = [s.strip("{}") for s in route.path.strip("/").split("/")]
    name = "-".join([route.method.lower(), *segments]).replace("_", "-").replace(".", "-")
    return os.path.join(ROOT, "events", route.function, name + ".json")


def test_every_documented_operation_has_a_sample_event_of_its_shape():
    function_of = {r.path: r.function for r in router.template_routes(TEMPLATE)}
    for method, path_template in openapi_operations():
        route = router.Route(path_template, method, function_of[path_template])
        path = event_file(route)
        assert os.path.exists(path), f"{route}: no sample event {os.path.relpath(path, ROOT)}"
        with open(path, encoding="utf-8") as f:
            event = json.load(f)
        assert event["version"] == "2.0" and event["routeKey"] == "$default"
        assert event["requestContext"]["http"]["method"] == route.method
        assert event["requestContext"]["http"]["path"] == event["rawPath"]
        params = re.findall(r"{(\w+)}", route.path)
        pattern = "^" + re.sub(r"{\w+}", "([^/]+)", route.path) + "$"
        match = re.match(pattern, event["rawPath"])
        assert match, f"{path}: rawPath {event['rawPath']} does not match {route.path}"
        assert event.get("pathParameters", {}) == dict(zip(params, match.groups()))
        assert all(k == k.lower() for k in event["headers"]), f"{path}: header names must be lowercase"
        if "body" in event:
            json.loads(event["body"])
            assert event["headers"]["content-type"] == "application/json"
