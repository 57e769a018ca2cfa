"""Simultaneous submissions against the real service while its workers run (not a test).

    .venv/bin/python -m bench.load --jobs 20 --db sqlite|postgresql [--targets onnx] [--timeout 900]

Starts the stack as `make run` does (app.local.LocalStack: a private Redis, the
migrations, the API and the workers the targets need) in a temporary directory, on
loopback only, on SQLite (the embedded default) or a throwaway PostgreSQL database.
Builds a tiny TorchScript model, fires ``--jobs`` submissions at once while a poller
reads job status, waits (at most ``--timeout`` seconds) for every accepted job to reach
a final state, and prints: accepted, 5xx, timeouts (no answer within 120 s), lost
(accepted but missing or not final at the deadline), drain time, GET p50/p99 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from app.local import QUEUES
from bench._stack import KEY, running_stack
from domain.toolchains import CONTROL_QUEUE
from testkit.db import PG_SERVER_URL, sqlite_url, throwaway_postgres
from testkit.toolchains import toolchain_python

FINAL = {"succeeded", "failed", "cancelled"}
SUBMIT_TIMEOUT_SECONDS = 120
# A few-kB convolutional net: the load is on the service, not the converter.
TINY_TORCHSCRIPT = """
import sys, torch
torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
    torch.nn.Flatten(), torch.nn.Linear(8, 10),
).eval()
torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 32, 32)), sys.argv[1])
"""


@dataclass
class Outcome:
    """What the burst and the drain saw; times in seconds unless named _ms."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    without_request_id: int = 0
    accepted: list[str] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    get_failures: Counter[str] = field(default_factory=Counter)
    final: dict[str, str] = field(default_factory=dict)
    burst_seconds: float = 0.0
    drain_seconds: float | None = None


def build_model(path: Path) -> None:
    subprocess.run([str(toolchain_python("torch")), "-c", TINY_TORCHSCRIPT, str(path)], check=True, timeout=300)


@contextmanager
def database(kind: str, data_dir: Path, server_url: str) -> Iterator[str]:
    """A database URL: SQLite in ``data_dir``, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield sqlite_url(data_dir)
        return
    with throwaway_postgres(server_url, prefix="modelport_bench") as url:
        yield url


def burst(base_url: str, model: bytes, spec: str, jobs: int, outcome: Outcome) -> None:
    """``jobs`` submissions released at the same instant, one connection each."""
    barrier = threading.Barrier(jobs)
    lock = threading.Lock()

    def submit() -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=SUBMIT_TIMEOUT_SECONDS) as client:
            barrier.wait()
            try:
                response = client.post("/v1/jobs", data={"spec": spec}, files={"model": ("tiny.pt", model)})
            except httpx.TimeoutException:
                with lock:
                    outcome.errors["timeout"] += 1
                return
            except httpx.HTTPError as exc:
                with lock:
                    outcome.errors[type(exc).__name__] += 1
                return
        with lock:
            outcome.statuses[response.status_code] += 1
            outcome.without_request_id += "X-Request-ID" not in response.headers
            if response.status_code == 202:
                outcome.accepted.append(response.json()["id"])

    threads = [threading.Thread(target=submit) for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def poll(base_url: str, outcome: Outcome, stop: threading.Event, deadline: float) -> None:
    """Read every accepted job's status in turn (timing each GET) until all are final."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            for job_id in [j for j in list(outcome.accepted) if j not in outcome.final]:
                started = time.perf_counter()
                try:
                    response = client.get(f"/v1/jobs/{job_id}")
                except httpx.HTTPError as exc:
                    outcome.get_failures[type(exc).__name__] += 1
                    continue
                outcome.get_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    outcome.get_failures[str(response.status_code)] += 1
                elif response.json()["status"] in FINAL:
                    outcome.final[job_id] = response.json()["status"]
            time.sleep(0.05)


def run(args: argparse.Namespace) -> Outcome:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    spec = json.dumps(
        {
            "model_format": "torchscript",
            "inputs": [{"name": "pixels", "shape": [1, 3, 32, 32], "dtype": "float32"}],
            "targets": targets,
        }
    )
    # Only the workers the plan needs: export_onnx runs on torch, the report on control.
    queues = [CONTROL_QUEUE, "torch"] if targets == ["onnx"] else list(QUEUES)
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="modelport-load-") as tmp, database(args.db, Path(tmp), args.pg) as url:
        data_dir = Path(tmp)
        model_path = data_dir / "tiny.pt"
        build_model(model_path)
        with running_stack(data_dir, queues=queues, database_url=url) as service:
            deadline = time.monotonic() + args.timeout
            stop = threading.Event()
            poller = threading.Thread(target=poll, args=(service.base_url, outcome, stop, deadline))
            started = time.monotonic()
            poller.start()
            burst(service.base_url, model_path.read_bytes(), spec, args.jobs, outcome)
            outcome.burst_seconds = time.monotonic() - started
            while time.monotonic() < deadline and len(outcome.final) < len(outcome.accepted):
                problem = service.stack.check_alive()
                if problem:
                    print(f"[load] {problem}; logs in {service.log_dir}")
                    break
                time.sleep(0.2)
            if outcome.accepted and len(outcome.final) == len(outcome.accepted):
                outcome.drain_seconds = time.monotonic() - started
            stop.set()
            poller.join()
    return outcome


def percentile(values: list[float], q: int) -> float:
    """The ``q``-th percentile (1-99) of ``values``, inclusive method; the value itself for one."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(args: argparse.Namespace, outcome: Outcome) -> str:
    fives = sum(n for status, n in outcome.statuses.items() if status >= 500)
    lost = len(outcome.accepted) - len(outcome.final)
    drain = f"{outcome.drain_seconds:.1f} s" if outcome.drain_seconds is not None else f"> {args.timeout} s"
    lines = [
        f"db={args.db} jobs={args.jobs} targets={args.targets}",
        f"accepted {len(outcome.accepted)}/{args.jobs}  5xx {fives}  timeouts {outcome.errors['timeout']}  "
        f"lost {lost}  other statuses {dict(s for s in outcome.statuses.items() if s[0] != 202 and s[0] < 500)}",
        f"no X-Request-ID {outcome.without_request_id}  connection errors "
        f"{sum(n for e, n in outcome.errors.items() if e != 'timeout')}",
        f"burst answered in {outcome.burst_seconds:.1f} s  drain (burst start to last job final) {drain}",
        f"final states {dict(Counter(outcome.final.values()))}",
    ]
    if outcome.get_ms:
        lines.append(
            f"GET /v1/jobs/{{id}}: {len(outcome.get_ms)} reads, p50 {percentile(outcome.get_ms, 50):.1f} ms, "
            f"p99 {percentile(outcome.get_ms, 99):.1f} ms, max {max(outcome.get_ms):.1f} ms, "
            f"failures {dict(outcome.get_failures)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="simultaneous submissions")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--targets", default="onnx", help="comma-separated targets of every job")
    parser.add_argument("--timeout", type=float, default=900, help="longest wait for every job to finish (s)")
    parser.add_argument("--pg", default=PG_SERVER_URL, help="PostgreSQL server (a database is made inside)")
    args = parser.parse_args()
    print(report(args, run(args)), flush=True)


if __name__ == "__main__":
    main()
