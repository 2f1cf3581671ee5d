#!/usr/bin/env python3
"""Warm invocations of one function's bootstrap: how long the handler takes per event, as
Lambda's Duration counts it (from the Runtime API handing out the event to the function
posting its response).

A stub Runtime API on loopback hands the same event out `runs` times (after `warm-up`
untimed ones) and times each from its `next` answer to the `response` post. The stub's
own share (Python, loopback HTTP) is in every figure alike, so two builds of one function
compare fairly; pick an event whose work needs no AWS call (the API's `triggers:test`,
events/api-test-selector.json), or the figure is the emulator's. Every response must be
the same success, or the run stops: an error path is not the work being measured.

  scripts/warm_invoke.py <bootstrap> <env-file> <event.json> [runs] [warm-up]
"""

import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from cold_start import env_from


class Stub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real Runtime API
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms ACK wait
    event = b""
    remaining = 0
    sent_at = {}
    durations = []
    responses = []
    done = threading.Event()

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if "/runtime/invocation/next" not in self.path or Stub.remaining <= 0:
            time.sleep(30)  # hold the poll; the process is killed meanwhile
            return
        Stub.remaining -= 1
        request_id = f"req-{Stub.remaining}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(Stub.event)))
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                         "arn:aws:lambda:us-east-1:123456789012:function:bench")
        Stub.sent_at[request_id] = time.perf_counter()
        self.end_headers()
        self.wfile.write(Stub.event)
        self.wfile.flush()

    def do_POST(self):  # noqa: N802
        arrived = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request_id = self.path.split("/invocation/")[-1].split("/")[0]
        Stub.durations.append((arrived - Stub.sent_at[request_id]) * 1e6)
        Stub.responses.append((self.path.rsplit("/", 1)[-1], body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if Stub.remaining <= 0:
            Stub.done.set()

    def log_message(self, *_):
        pass


def main():
    binary, env_file, event_file = sys.argv[1], sys.argv[2], sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    warm_up = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    with open(event_file, "rb") as file:
        Stub.event = json.dumps(json.load(file)).encode()
    Stub.remaining = runs + warm_up
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env_from(env_file), AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_port}",
               AWS_LAMBDA_FUNCTION_NAME="bench", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
               AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_LOG_LEVEL="warn",
               PATH=os.environ.get("PATH", ""))
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        if not Stub.done.wait(300):
            raise SystemExit(f"{len(Stub.responses)} of {runs + warm_up} answered within 300 s")
    finally:
        process.kill()
        process.wait()
        server.shutdown()
    kinds = {(kind, body) for kind, body in Stub.responses}
    if len(kinds) != 1 or Stub.responses[0][0] != "response":
        raise SystemExit(f"answers differ or failed: {sorted(kinds)[:3]}")
    print(f"answer: {Stub.responses[0][1][:160].decode(errors='replace')}")
    times = sorted(Stub.durations[warm_up:])
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    print(f"{os.path.basename(os.path.dirname(binary)) or binary}: {len(times)} invocations, "
          f"median {statistics.median(times):.0f} µs, p90 {p90:.0f} µs, "
          f"mean {statistics.fmean(times):.0f} µs, min {times[0]:.0f} µs")


if __name__ == "__main__":
    main()
