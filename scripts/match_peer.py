#!/usr/bin/env python3
"""The Python peer of the matching benchmark: Google's CEL runtime (PyPI
cel-expr-python, the C++ implementation) with nothing but a dict from kind to the
selectors that pin it (plus the selectors that pin none), on the workload files the
Rust example wrote. Prints its per-event times, the ratio to the Rust engine, and how
many events got the same match set from both.

    match_peer.py <workload dir> [<events>]
"""
import json
import statistics
import sys
import time

from cel_expr_python import cel


def main() -> None:
    directory = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    subscriptions = json.load(open(f"{directory}/subscriptions.json"))
    events = json.load(open(f"{directory}/events.json"))[:limit]
    rust = json.load(open(f"{directory}/rust.json"))

    env = cel.NewEnv(variables={"event": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})
    started = time.perf_counter()
    by_kind: dict[str, list] = {}
    any_kind: list = []
    for sub in subscriptions:
        compiled = (sub["id"], env.compile(sub["selector"]))
        if sub["kinds"] is None:
            any_kind.append(compiled)
        else:
            for kind in sub["kinds"]:
                by_kind.setdefault(kind, []).append(compiled)
    build_us = (time.perf_counter() - started) * 1e6 / len(subscriptions)

    times = []
    same = 0
    for event, expected in zip(events, rust["matches"]):
        started = time.perf_counter()
        matched = []
        for sub_id, expr in by_kind.get(event["kind"], []) + any_kind:
            try:
                if expr.eval(data={"event": event}).value() is True:
                    matched.append(sub_id)
            except Exception:  # an evaluation error is no match, as in the service
                pass
        times.append((time.perf_counter() - started) * 1e6)
        same += sorted(set(matched)) == sorted(expected)
    times.sort()
    median = statistics.median(times)
    p99 = times[min(len(times) - 1, round((len(times) - 1) * 0.99))]
    print(
        f"python n={len(subscriptions):>7} median={median:>10.1f}µs p99={p99:>10.1f}µs "
        f"build={build_us:>6.1f}µs/sub  rust is {median / rust['medianUs']:>6.0f}x faster (median); "
        f"match sets identical on {same}/{len(times)} events"
    )


if __name__ == "__main__":
    main()
