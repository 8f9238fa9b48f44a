#!/usr/bin/env python3
"""The local API router for `cargo lambda watch`, derived from template.yaml.

template.yaml is the single source of truth for HTTP routes. `cargo lambda watch` reads its router
from the table `[workspace.metadata.lambda.watch.router]` at the end of the workspace Cargo.toml.
This script keeps the two in step:

    python3 local/router.py check   # exit 1 and print every difference (CI and the test run this)
    python3 local/router.py print   # print the TOML table generated from template.yaml
    python3 local/router.py write   # rewrite the table at the end of Cargo.toml from template.yaml

Options: --template PATH (default template.yaml), --cargo PATH (default Cargo.toml), both relative
to the repository root. Stdlib + PyYAML; the YAML loader (CloudFormation short tags) and the
function-name rule (Metadata.BuildProperties.Binary, else the CodeUri directory) come from
local/samtemplate.py, which the local stack and the event pump use too.

A route is (path, METHOD, function). Paths keep API Gateway's `{name}` parameters, which is also
the syntax cargo-lambda's router takes. An HttpApi event with Method ANY becomes a plain string
value (`"/path" = "function"`), which cargo-lambda routes for every method.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from samtemplate import FUNCTION, Template, load_template  # noqa: E402

ROUTER_HEADER = "[workspace.metadata.lambda.watch.router]"
ROUTER_KEYS = ("workspace", "metadata", "lambda", "watch", "router")
ANY = "ANY"


class RouterError(Exception):
    """The template or the router table cannot be turned into routes."""


@dataclass(frozen=True, order=True)
class Route:
    path: str
    method: str
    function: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.function}"


# --------------------------------------------------------------------------------------------
# template.yaml -> routes
# --------------------------------------------------------------------------------------------


def template_routes(template_path: str) -> list[Route]:
    """Every HttpApi event of every AWS::Serverless::Function, in template order."""
    doc = load_template(template_path)
    tpl = Template(doc)
    routes: list[Route] = []
    problems: list[str] = []
    for logical_id, res in (doc.get("Resources") or {}).items():
        if not isinstance(res, dict) or res.get("Type") != FUNCTION:
            continue
        function = tpl.function_binary(logical_id)
        events = (res.get("Properties") or {}).get("Events") or {}
        for name, event in events.items():
            if not isinstance(event, dict) or event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            where = f"{logical_id}.Events.{name}"
            path, method = props.get("Path"), props.get("Method")
            if path is None and method is None:
                problems.append(f"{where}: no Path/Method (the $default catch-all route) is not routable locally")
                continue
            if not isinstance(path, str) or not isinstance(method, str):
                problems.append(f"{where}: Path and Method must be literal strings")
                continue
            if "+}" in path:
                problems.append(f"{where}: greedy path parameter in {path!r} is not supported by this router")
                continue
            method = method.upper()
            if method in ("X-AMAZON-APIGATEWAY-ANY-METHOD", "*"):
                method = ANY
            routes.append(Route(path, method, function))
    if problems:
        raise RouterError("\n".join(problems))
    return routes


def render_table(routes: list[Route], header: bool = True) -> str:
    """The TOML router table for `routes` (paths in first-seen order)."""
    by_path: dict[str, list[Route]] = {}
    for r in routes:
        by_path.setdefault(r.path, []).append(r)
    lines = [ROUTER_HEADER] if header else []
    for path, rs in by_path.items():
        key = _toml_string(path)
        if any(r.method == ANY for r in rs):
            functions = {r.function for r in rs}
            if len(rs) != 1 or len(functions) != 1:
                raise RouterError(f"{path}: ANY cannot be combined with other methods or functions locally")
            lines.append(f"{key} = {_toml_string(rs[0].function)}")
            continue
        entries = ", ".join(
            f"{{ method = {_toml_string(r.method)}, function = {_toml_string(r.function)} }}" for r in rs
        )
        lines.append(f"{key} = [{entries}]")
    return "\n".join(lines) + "\n"


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Cargo.toml -> routes
# --------------------------------------------------------------------------------------------


def cargo_routes(cargo_path: str) -> list[Route]:
    with open(cargo_path, "rb") as f:
        data = tomllib.load(f)
    table = data
    for key in ROUTER_KEYS:
        if not isinstance(table, dict) or key not in table:
            raise RouterError(f"{cargo_path}: no {ROUTER_HEADER} table")
        table = table[key]
    routes: list[Route] = []
    problems: list[str] = []
    for path, value in table.items():
        if isinstance(value, str):
            routes.append(Route(path, ANY, value))
            continue
        if not isinstance(value, list):
            problems.append(f"{path}: expected a function name or a list of {{ method, function }}")
            continue
        for entry in value:
            if not isinstance(entry, dict) or not isinstance(entry.get("function"), str):
                problems.append(f"{path}: entry {entry!r} has no function")
                continue
            method = entry.get("method")
            routes.append(Route(path, method.upper() if isinstance(method, str) else ANY, entry["function"]))
    if problems:
        raise RouterError("\n".join(f"{cargo_path}: {p}" for p in problems))
    return routes


# --------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------


def differences(template: list[Route], router: list[Route]) -> list[str]:
    """Human-readable differences; empty when the router serves exactly the template's routes."""
    out: list[str] = []
    for label, routes in (("template.yaml", template), ("Cargo.toml router", router)):
        seen: dict[tuple[str, str], Route] = {}
        for r in routes:
            key = (r.path, r.method)
            if key in seen:
                out.append(f"duplicate in {label}: {r.method} {r.path} ({seen[key].function} and {r.function})")
            seen[key] = r
    t = {(r.path, r.method): r.function for r in template}
    c = {(r.path, r.method): r.function for r in router}
    for key in t.keys() - c.keys():
        out.append(f"missing from Cargo.toml router: {key[1]} {key[0]} -> {t[key]}")
    for key in c.keys() - t.keys():
        out.append(f"not in template.yaml: {key[1]} {key[0]} -> {c[key]}")
    for key in t.keys() & c.keys():
        if t[key] != c[key]:
            out.append(f"different function for {key[1]} {key[0]}: template.yaml {t[key]}, Cargo.toml router {c[key]}")
    return sorted(out)


def write_table(cargo_path: str, table: str) -> None:
    """Replace the router table, which must be the last table of Cargo.toml, with `table`."""
    with open(cargo_path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == ROUTER_HEADER]
    if len(starts) != 1:
        raise RouterError(f"{cargo_path}: expected exactly one {ROUTER_HEADER} line")
    start = starts[0]
    for line in lines[start + 1 :]:
        if line.lstrip().startswith("["):
            raise RouterError(f"{cargo_path}: {ROUTER_HEADER} must be the last table (found {line.strip()})")
    new = "".join(lines[:start]) + table
    with open(cargo_path, "w", encoding="utf-8") as f:
        f.write(new)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["check", "print", "write"])
    parser.add_argument("--template", default=os.path.join(ROOT, "template.yaml"))
    parser.add_argument("--cargo", default=os.path.join(ROOT, "Cargo.toml"))
    args = parser.parse_args(argv)
    try:
        routes = template_routes(args.template)
        if args.command == "print":
            sys.stdout.write(render_table(routes))
            return 0
        if args.command == "write":
            write_table(args.cargo, render_table(routes))
            print(f"wrote {len(routes)} routes to {args.cargo}")
            return 0
        diffs = differences(routes, cargo_routes(args.cargo))
    except (RouterError, OSError, tomllib.TOMLDecodeError, ValueError) as e:
        print(f"router: {e}", file=sys.stderr)
        return 1
    if diffs:
        print(f"template.yaml and the Cargo.toml router disagree ({len(diffs)}):")
        for d in diffs:
            print(f"  {d}")
        print("fix: python3 local/router.py write   (or print, and paste the table)")
        return 1
    print(f"ok: {len(routes)} routes of template.yaml are in the Cargo.toml router")
    return 0


if __name__ == "__main__":
    sys.exit(main())
