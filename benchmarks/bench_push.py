"""Benchmark: push a synthetic cohort to the local FHIR server in transactions vs one POST per resource.

    python benchmarks/bench_push.py [--patients 10000] [--sample 3000] [--chunk 200] [--workers 2] [--compare]

Generates a cohort extract (`patients generate`) and maps it to NDJSON (`patients map`), then, side by side in
one run, each into its own fresh sekmet on 127.0.0.1 (in memory):

- transactions: the whole cohort with `FhirClient.push` (what `fhir-adapter push` does): transaction Bundles of
  `--chunk` PUTs, `--workers` in flight; without reading the server first unless `--compare`;
- one POST per resource: the resources of the first patients (about `--sample` resources; Patients first,
  then the rest with their subject rewritten to the id the server gave), `--workers` requests in flight.
  Only a sample is sent, so its resources/s is measured on the sample and the time for the whole cohort is
  extrapolated from it (the output says so).

Prints resources/s for both and the ratio. Mapping time is printed but not part of either figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fhir_adapter.cli.push import read_inputs
from fhir_adapter.client import FhirClient
from fhir_adapter.ehr import generate_cohort, map_extract
from fhir_adapter.server import LocalServer


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of a process so far; None where /proc is missing (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(server: LocalServer, since: float | None, resources: int) -> str:
    now = cpu_seconds(server.process.pid)  # type: ignore[union-attr]
    if now is None or since is None:
        return ""
    return f"; server CPU {1000 * (now - since) / resources:.2f} ms per resource"


def per_resource_sample(items: list[tuple[str, dict]], wanted: int) -> list[dict]:
    """The resources of the first patients, about `wanted` of them: Patients first, then what refers to them."""
    patients = [r for _, r in items if r["resourceType"] == "Patient"]
    by_subject: dict[str, list[dict]] = {}
    for _, resource in items:
        subject = (resource.get("subject") or {}).get("reference")
        if subject:
            by_subject.setdefault(subject, []).append(resource)
    chosen: list[dict] = []
    others: list[dict] = []
    for patient in patients:
        if len(chosen) + len(others) >= wanted:
            break
        chosen.append(patient)
        others += by_subject.get(f"Patient/{patient['id']}", [])
    return chosen + others


def post_each(base_url: str, resources: list[dict], workers: int) -> tuple[float, int]:
    """POST every resource on its own (the server assigns ids; subjects rewritten to them); (seconds, failed)."""
    server_ids: dict[str, str] = {}
    failed = 0
    with FhirClient(base_url, pool_size=max(10, workers * 2)) as client:

        def post(resource: dict) -> tuple[str, str | None]:
            body = {k: v for k, v in resource.items() if k != "id"}
            subject = (body.get("subject") or {}).get("reference")
            if subject in server_ids:
                body["subject"] = {**body["subject"], "reference": server_ids[subject]}
            response = client.request("POST", body["resourceType"], json=body, headers={"Prefer": "return=minimal"})
            location = response.headers.get("Location") or ""
            parts = location.split("/_history")[0].rsplit("/", 2)
            return f"{resource['resourceType']}/{resource['id']}", "/".join(parts[-2:]) if len(parts) >= 2 else None

        patients = [r for r in resources if r["resourceType"] == "Patient"]
        rest = [r for r in resources if r["resourceType"] != "Patient"]
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            for ours, theirs in pool.map(post, patients):
                if theirs:
                    server_ids[ours] = theirs
                else:
                    failed += 1
            for _, theirs in pool.map(post, rest):
                failed += theirs is None
        return time.perf_counter() - started, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=3_000, help="resources sent one POST each (default 3000)")
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compare", action="store_true", help="transactions read the server first (as a re-push)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        summary = map_extract(generate_cohort(args.patients, args.seed, root / "extract"), root / "fhir")
        items, _ = read_inputs([str(root / "fhir")])
        total = len(items)
        print(f"cohort: {args.patients:,} patients, {total:,} resources ({json.dumps(summary.resources)}), "
              f"generated and mapped in {time.perf_counter() - started:.1f} s (not counted below)")

        with LocalServer() as server, FhirClient(server.base_url, pool_size=max(10, args.workers * 2)) as client:
            client.capabilities()
            cpu = cpu_seconds(server.process.pid)  # type: ignore[union-attr]
            result = client.push(items, chunk_size=args.chunk, workers=args.workers, compare=args.compare)
            tx_cpu = server_cpu(server, cpu, total)
        if not result.ok:
            print(f"transactions: {result.failed} failed; first: {result.failures[0].describe()}", file=sys.stderr)
            return 1
        tx_rate = total / result.seconds
        print(f"transactions:      {total:,} resources in {result.seconds:.1f} s = {tx_rate:,.0f} resources/s "
              f"({result.requests} requests; chunks of {args.chunk}, {args.workers} in flight, "
              f"{'reading the server first' if args.compare else 'no read first'}{tx_cpu})")

        sample = per_resource_sample(items, args.sample)
        with LocalServer() as server:
            with FhirClient(server.base_url) as probe:
                probe.capabilities()
            cpu = cpu_seconds(server.process.pid)  # type: ignore[union-attr]
            seconds, failed = post_each(server.base_url, sample, args.workers)
            post_cpu = server_cpu(server, cpu, len(sample))
        if failed:
            print(f"one POST per resource: {failed} failed", file=sys.stderr)
            return 1
        post_rate = len(sample) / seconds
        print(f"one POST each:     {len(sample):,} resources (sample: the first patients' resources) in "
              f"{seconds:.1f} s = {post_rate:,.0f} resources/s ({args.workers} in flight{post_cpu}); "
              f"extrapolated to the whole cohort: {total / post_rate:,.0f} s")
        print(f"ratio: transactions are {tx_rate / post_rate:.1f}x faster than one POST per resource")
    return 0


if __name__ == "__main__":
    sys.exit(main())
