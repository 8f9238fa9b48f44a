#!/usr/bin/env python3
"""Contract gate: schemathesis against the running local API (`cargo lambda watch` on :9000)
with the committed openapi.json and a dev token of the demo tenant's owner.

Checks (local/schemathesis.toml): no 5xx; every response conforms to its documented status
codes, content type, headers and schema; malformed bodies and wrong methods answer 4xx
problem+json; stateful create -> use -> delete chains through the document's OpenAPI links.
Every check runs; an operation that skips one names it, with the reason, in the config.
Bounded per operation (max-examples) and in time (--max-time). A failure prints the
reproducing request (curl) and a `st replay` id.

Prints its figures and writes them to target/gates/contract.json for the test summary.
Usage: local/contract.py [--url URL] [--max-time SECONDS] [--schema openapi.json]
"""
import argparse, glob, json, os, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEMO_TENANT = "00000000-0000-4000-8000-000000000001"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:9000")
    ap.add_argument("--schema", default=os.path.join(ROOT, "openapi.json"))
    ap.add_argument("--max-time", type=int, default=240)
    ap.add_argument("--token", default=None, help="bearer credential (default: local/.state/token)")
    ap.add_argument("--config", default=os.path.join(HERE, "schemathesis.toml"))
    ap.add_argument("--report-dir", default=os.path.join(ROOT, "target", "contract"))
    ap.add_argument("--figures", default=os.path.join(ROOT, "target", "gates", "contract.json"))
    args = ap.parse_args()

    token = args.token
    if token is None:
        path = os.path.join(HERE, ".state", "token")
        if not os.path.exists(path):
            sys.exit("no dev token at local/.state/token: run local/up --services-only first")
        token = open(path).read().strip()
    os.makedirs(args.report_dir, exist_ok=True)
    for old in glob.glob(os.path.join(args.report_dir, "*.json")) + glob.glob(os.path.join(args.report_dir, "*.txt")):
        os.remove(old)
    env = {
        **os.environ,
        "CONTRACT_BASE_URL": args.url,
        "CONTRACT_TOKEN": token,
        "CONTRACT_TENANT": DEMO_TENANT,
        "SCHEMATHESIS_HOOKS": os.path.join(HERE, "contract_hooks.py"),
        "CONTRACT_EMULATOR_LOG": os.path.join(args.report_dir, "emulator-500s.txt"),
    }
    cmd = [
        "st", "--config-file", args.config, "run", args.schema,
        # Every check runs (schemathesis' default): which operations skip one, and why, is
        # local/schemathesis.toml's to say. (A CLI `--checks` would override its per-operation
        # exclusions.)
        # The analytics and e-commerce day ranges (`from`/`to` dates with patterns, `tz`) make
        # Hypothesis discard most candidates: a health check, not a finding about the API.
        "--suppress-health-check", "filter_too_much",
        "--max-time", str(args.max_time),
        "--report", "json,junit", "--report-dir", args.report_dir,
    ]
    started = time.monotonic()
    rc = subprocess.call(cmd, env=env, cwd=ROOT)
    reports = sorted(glob.glob(os.path.join(args.report_dir, "json-*.json")))
    figures = {"exit_code": rc, "seconds": round(time.monotonic() - started)}
    emulator_log = env["CONTRACT_EMULATOR_LOG"]
    if os.path.exists(emulator_log):
        dropped = open(emulator_log, encoding="utf-8").read().splitlines()
        figures["emulator_500s_dropped"] = len(dropped)
        for line in dropped[:10]:
            print(f"contract gate: the local emulator (not the API) answered its own 500 to {line}")
    if reports:
        report = json.load(open(reports[-1]))
        figures.update(
            operations_fuzzed=report["operations"]["tested"],
            operations_total=report["operations"]["total"],
            cases_run=report["test_cases"]["generated"],
            unique_failures=report["test_cases"]["unique_failures"],
            errors=sum(e.get("count", 1) for e in report.get("errors", [])),
        )
    os.makedirs(os.path.dirname(args.figures), exist_ok=True)
    with open(args.figures, "w") as f:
        json.dump(figures, f)
    print("contract gate:", json.dumps(figures))
    return rc


if __name__ == "__main__":
    sys.exit(main())
