"""Latency of the e2b-compatible surface through the official e2b SDK: `commands.run("true")`
(envd Start stream: spawn, wait, end) and `files.read` of a small file, against a running
`sandpit serve` (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY set by the caller) whose `base`
image is built. Prints a Markdown table."""

import importlib.metadata
import statistics
import sys
import time

from e2b import Sandbox

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def measure(fn, runs):
    for _ in range(10):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


t = time.perf_counter()
sbx = Sandbox.create("base", timeout=600)
create_ms = (time.perf_counter() - t) * 1000
try:
    sbx.files.write("/tmp/small.txt", "x" * 100)
    run = measure(lambda: sbx.commands.run("true"), RUNS)
    read = measure(lambda: sbx.files.read("/tmp/small.txt"), RUNS)
finally:
    sbx.kill()

print(f"e2b SDK {importlib.metadata.version('e2b')}, {RUNS} calls each after 10 warm-up calls, one sandbox of the `base` image.")
print()
print("| call | p50 | p95 |")
print("|---|---|---|")
print(f"| `commands.run(\"true\")` (target p50 ≤ 10 ms) | {run[0]:.1f} ms | {run[1]:.1f} ms |")
print(f"| `files.read` (100 B) | {read[0]:.1f} ms | {read[1]:.1f} ms |")
print(f"| `Sandbox.create(\"base\")` (once, image cached) | {create_ms:.0f} ms | |")
