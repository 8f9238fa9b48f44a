#!/usr/bin/env python3
"""Start-up benchmark: release-built `settings` against a hello-world lambda_http binary built the
same way, in one run. Each sample starts the binary under a minimal Lambda Runtime API (this
script), hands it one API Gateway v2 event, and measures process start -> first response.
Samples alternate between binaries so machine noise hits both alike. Prints sizes, medians and
ratios. Usage: bench/startup.py [--samples N] [--skip-build]
"""
import argparse, json, os, socket, statistics, subprocess, sys, threading, time, zipfile, io
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMBDA_DIR = os.path.join(ROOT, "target", "lambda")


def api_event(path, headers):
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"accept": "application/json", **headers},
        "requestContext": {"accountId": "123456789012", "apiId": "bench", "domainName": "bench.local",
                           "domainPrefix": "bench", "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                           "sourceIp": "127.0.0.1", "userAgent": "bench"}, "requestId": "bench",
                           "routeKey": "$default", "stage": "$default", "time": "23/Nov/2026:00:00:00 +0000",
                           "timeEpoch": 0},
        "isBase64Encoded": False,
    }


class RuntimeApi:
    """Serves one invocation to one process start and records when its response arrives."""

    def __init__(self):
        self.event = None
        self.done = threading.Event()
        self.status = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.endswith("/invocation/next"):
                    if api.event is None:
                        api.done.wait(30)
                        self.send_response(500); self.end_headers(); return
                    body = json.dumps(api.event).encode()
                    api.event = None
                    self.send_response(200)
                    self.send_header("Lambda-Runtime-Aws-Request-Id", "req-1")
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
                    self.send_header("Lambda-Runtime-Trace-Id", "Root=1-bench")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                if "/response" in self.path:
                    try:
                        api.status = json.loads(data).get("statusCode")
                    except ValueError:
                        api.status = "?"
                else:
                    api.status = "error: " + data.decode(errors="replace")[:200]
                api.t_done = time.perf_counter()
                self.send_response(202); self.end_headers()
                api.done.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sample(self, binary, event, env):
        self.event, self.status = event, None
        self.done.clear()
        full_env = {**os.environ, **env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.port}",
                    "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
                    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "RUST_LOG": "warn"}
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary], env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ok = self.done.wait(30)
        proc.kill()
        _, err = proc.communicate()
        self.done.set()  # release a waiting /next
        if not ok:
            raise RuntimeError(f"{binary} gave no response: {err.decode(errors='replace')[-2000:]}")
        return (self.t_done - t0) * 1000, self.status


def size(path):
    raw = os.path.getsize(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    return raw, len(buf.getvalue())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()
    if not args.skip_build:
        subprocess.run(["cargo", "lambda", "build", "--release", "-p", "settings", "-p", "bench-hello"], cwd=ROOT, check=True)
    hello = os.path.join(LAMBDA_DIR, "bench-hello", "bootstrap")
    settings = os.path.join(LAMBDA_DIR, "settings", "bootstrap")
    env_file = os.path.join(ROOT, "local", ".state", "env")
    env = {}
    if os.path.exists(env_file):
        for line in open(env_file):
            if "=" in line and not line.startswith("#"):
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    key = "pk_demo0001_localdevsecretlocaldevsecret00"
    cases = [
        ("hello-world (baseline)", hello, api_event("/", {})),
        ("settings: GET /me without a token (401, no I/O)", settings, api_event("/me", {})),
        ("settings: GET /settings/team with the demo key (auth + Postgres)", settings,
         api_event("/settings/team", {"authorization": f"Bearer {key}", "x-tenant-id": "00000000-0000-4000-8000-000000000001"})),
    ]
    results = {name: [] for name, _, _ in cases}
    statuses = {}
    for _ in range(args.samples):
        for name, binary, event in cases:
            # A fresh Runtime API per sample: a killed process's late /next can never take the
            # next sample's event.
            rt = RuntimeApi()
            ms, status = rt.sample(binary, event, env)
            rt.server.shutdown()
            rt.server.server_close()
            results[name].append(ms)
            statuses[name] = status
    base = statistics.median(results[cases[0][0]])
    print(f"\nbinary sizes (release, x86_64, stripped):")
    for name, path in [("bench-hello", hello), ("settings", settings)]:
        raw, zipped = size(path)
        print(f"  {name:12s} {raw/1e6:6.2f} MB   zip {zipped/1e6:5.2f} MB")
    hr, _ = size(hello); sr, _ = size(settings)
    print(f"  size ratio settings/hello: {sr/hr:.2f}x")
    print(f"\nstart -> first response, {args.samples} samples each (median, p90), same run:")
    for name, _, _ in cases:
        xs = sorted(results[name])
        med, p90 = statistics.median(xs), xs[int(len(xs) * 0.9) - 1]
        print(f"  {name:66s} {med:7.2f} ms  p90 {p90:7.2f} ms  ratio {med/base:5.2f}x  (status {statuses[name]})")


if __name__ == "__main__":
    sys.exit(main())
