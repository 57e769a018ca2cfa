"""N jobs submitted at once to the real service: drain time, jobs per minute, none lost or
duplicated, the API's GET latency while the workers are busy (not a test).

    .venv/bin/python -m bench.throughput [--jobs 20] [--targets tflite] [--timeout 900]

Starts the stack (``bench._stack.running_stack``: SQLite, a private Redis, the API, one
worker per queue), runs one job first so the workers' warm parents are up (its time is
printed, not counted), then releases ``--jobs`` submissions of a tiny TorchScript model
(``bench.load``'s) at the same instant while a poller reads every unfinished job's
status. Afterwards it lists every job the service holds and checks: each submission is
one job, every job is final, no stage ran more than once (``attempts``), no job has two
artifacts of one name. Prints drain time (burst start to last job final), jobs per
minute, GET /v1/jobs/{id} p50/p99/max while jobs were unfinished, core count and load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench._stack import Stack, machine, running_stack
from bench.load import Outcome, build_model, burst, percentile, poll

P99_GOAL_MS = 100.0


def all_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    """Every job the service lists, page after page."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        jobs.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


def duplicates(service: Stack, jobs: list[dict[str, Any]]) -> list[str]:
    """What ran twice: a stage with more than one attempt, an artifact name twice in a job."""
    found = []
    for job in jobs:
        found += [f"{job['id']}: {s['name']} ran {s['attempts']} times" for s in job["stages"] if s["attempts"] > 1]
        names = Counter(a["name"] for a in service.client.get(f"/v1/jobs/{job['id']}/artifacts").json())
        found += [f"{job['id']}: artifact {name} {n} times" for name, n in names.items() if n > 1]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="simultaneous submissions")
    parser.add_argument("--targets", default="tflite", help="comma-separated targets of every job")
    parser.add_argument("--timeout", type=float, default=900, help="longest wait for every job to finish (s)")
    args = parser.parse_args()
    print(machine(), flush=True)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    pixels = {"name": "pixels", "shape": [1, 3, 32, 32], "dtype": "float32"}
    spec = {"model_format": "torchscript", "inputs": [pixels], "targets": targets}
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="modelport-throughput-") as tmp:
        data_dir = Path(tmp)
        model = data_dir / "tiny.pt"
        build_model(model)
        with running_stack(data_dir / "service") as service:
            started = time.monotonic()
            first = service.wait(service.submit(model, spec)["id"])
            print(
                f"first job (starts the warm parents; not counted): {time.monotonic() - started:.1f} s "
                f"{first['status']}",
                flush=True,
            )
            deadline = time.monotonic() + args.timeout
            stop = threading.Event()
            poller = threading.Thread(target=poll, args=(service.base_url, outcome, stop, deadline))
            started = time.monotonic()
            poller.start()
            burst(service.base_url, model.read_bytes(), json.dumps(spec), args.jobs, outcome)
            burst_seconds = time.monotonic() - started
            while time.monotonic() < deadline and len(outcome.final) < len(outcome.accepted):
                if problem := service.stack.check_alive():
                    print(f"{problem}; logs in {service.log_dir}")
                    break
                time.sleep(0.2)
            drain = time.monotonic() - started
            stop.set()
            poller.join()
            listed = [job for job in all_jobs(service.client) if job["id"] != first["id"]]
            twice = duplicates(service, listed)
    accepted = outcome.accepted
    states = Counter(job["status"] for job in listed)
    lost = len(set(accepted) - {job["id"] for job in listed if job["status"] in ("succeeded", "failed")})
    print(
        f"jobs={args.jobs} targets={targets} accepted {len(accepted)} (distinct {len(set(accepted))}), "
        f"listed {len(listed)}, final states {dict(states)}"
    )
    print(
        f"lost (accepted, not final or not listed) {lost}; duplicated {len(twice)}"
        + "".join(f"\n  {line}" for line in twice[:10])
    )
    print(
        f"burst answered in {burst_seconds:.1f} s; drain (burst start to last job final) {drain:.1f} s; "
        f"{states['succeeded'] / drain * 60:.1f} succeeded jobs per minute"
    )
    if outcome.get_ms:
        p99 = percentile(outcome.get_ms, 99)
        print(
            f"GET /v1/jobs/{{id}} while jobs ran: {len(outcome.get_ms)} reads, p50 "
            f"{percentile(outcome.get_ms, 50):.1f} ms, p99 {p99:.1f} ms, max {max(outcome.get_ms):.1f} ms "
            f"(goal p99 < {P99_GOAL_MS:.0f} ms: {'met' if p99 < P99_GOAL_MS else 'not met'}); "
            f"failures {dict(outcome.get_failures)}"
        )
    print(f"load after: {machine()}")


if __name__ == "__main__":
    main()
