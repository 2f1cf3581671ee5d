#!/usr/bin/env python3
"""Cold start of each function's bootstrap, as Lambda counts its Init Duration: from the
process start to its first `GET /runtime/invocation/next` on the Runtime API.

A stub Runtime API on loopback answers nothing (the request is held, then the process is
killed), so what is measured is the init phase alone: settings, SDK config and clients,
tracing, the handler's set-up. The functions read their settings from an env file (the
one `scripts/dev` writes for `cargo lambda watch`), so nothing is missing at init.

  scripts/cold_start.py <bootstrap-dir> <env-file> [runs]   (bootstrap-dir: target/lambda)
"""

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

FUNCTIONS = ["trigger-ingest", "trigger-match", "trigger-dispatch", "trigger-api",
             "trigger-deadletter", "trigger-scheduler"]


class Stub(http.server.BaseHTTPRequestHandler):
    first_next = None
    arrived = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if "/runtime/invocation/next" in self.path and not Stub.arrived.is_set():
            Stub.first_next = time.perf_counter()
            Stub.arrived.set()
        time.sleep(5)  # hold the poll; the process is killed meanwhile

    def log_message(self, *_):
        pass


def env_from(path):
    env = {}
    with open(path) as file:
        for line in file:
            name, _, value = line.strip().partition("=")
            if name and not name.startswith("#"):
                env[name] = value
    return env


def once(binary, name, base_env, port):
    Stub.first_next = None
    Stub.arrived.clear()
    env = dict(base_env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}",
               AWS_LAMBDA_FUNCTION_NAME=name, AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
               AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_LOG_LEVEL="warn",
               PATH=os.environ.get("PATH", ""))
    start = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        if not Stub.arrived.wait(10):
            raise SystemExit(f"{name}: no call to the Runtime API within 10 s")
        return (Stub.first_next - start) * 1000
    finally:
        process.kill()
        process.wait()


def main():
    root, env_file = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_env = env_from(env_file)
    print("| function | bootstrap MiB | init median ms | p90 ms | min ms |")
    print("|---|---:|---:|---:|---:|")
    for name in FUNCTIONS:
        binary = os.path.join(root, name, "bootstrap")
        once(binary, name, base_env, server.server_port)  # page cache warm, as Lambda's is
        times = sorted(once(binary, name, base_env, server.server_port) for _ in range(runs))
        size = os.path.getsize(binary) / 2**20
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        print(f"| {name} | {size:.1f} | {statistics.median(times):.1f} | {p90:.1f} "
              f"| {times[0]:.1f} |")
    server.shutdown()


if __name__ == "__main__":
    main()
