#!/usr/bin/env python3
"""`make bench-serve RUN=<run dir> [EXPORT=<its export>]`: `sendit serve` under load, dynamic batching
against a naive server, and (with --export) the run's ONNX export served the same way.

Starts `sendit serve RUN` on a free loopback port, then 1, 8 and 32 concurrent clients (asyncio +
httpx, one process) each post requests of 8 real tweets (the run's test split) for --seconds per
level, and records texts/s, p50/p99 latency, errors, the server's texts per forward pass (from
/health) and its peak RSS (VmHWM, reset per level where Linux allows; else the largest RSS
sampled). Then the same against `sendit serve --naive` (one request per forward pass, one at a
time) and, with --export, against `sendit serve EXPORT` (ONNX Runtime, batched; the deployment
issue's goal: >= 2x the torch server's texts/s at 32 clients). Writes a markdown table with the
ratios, the machine and the command to
benchmarks/results/serve.md. Clients and server share the machine, so on few cores the clients'
CPU is part of the cost, for both servers alike.
"""
import argparse
import asyncio
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sendit serve` in a child process on loopback, stopped on exit."""

    def __init__(self, target: Path, name: str, naive: bool, log_dir: Path, timeout: float = 300):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"server-{name.replace(' ', '-')}.log"
        command = [sys.executable, "-m", "sendit.cli", "serve", str(target), "--port", str(self.port)]
        self.process = subprocess.Popen(command + (["--naive"] if naive else []), stdout=self.log.open("w"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"sendit serve did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=30).json()

    def peak_rss_mb(self) -> float | None:
        """VmHWM: the resident-memory high-water mark (Linux), None elsewhere."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def reset_peak(self) -> None:
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def rss_mb(self) -> float:
        try:
            import psutil

            return psutil.Process(self.process.pid).memory_info().rss / 2**20
        except ImportError:
            return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def load_level(server: Server, batches: list[list[str]], clients: int, seconds: float) -> dict:
    """`clients` loops posting one request after another for `seconds`; latency of each success."""
    latencies, errors, sampled = [], 0, []
    stop_at = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient, offset: int) -> None:
        nonlocal errors
        i = offset
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                ok = (await http.post("/v1/predict", json={"texts": batches[i % len(batches)]})).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1
            i += 1

    async def sample_rss() -> None:
        while time.perf_counter() < stop_at:
            sampled.append(server.rss_mb())
            await asyncio.sleep(0.25)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
        started = time.perf_counter()
        await asyncio.gather(sample_rss(), *(client(http, k * len(batches) // clients) for k in range(clients)))
        elapsed = time.perf_counter() - started
    texts = len(latencies) * len(batches[0])
    return {"texts_per_s": texts / elapsed, "p50_ms": np.percentile(latencies, 50) * 1000 if latencies else np.nan,
            "p99_ms": np.percentile(latencies, 99) * 1000 if latencies else np.nan, "errors": errors,
            "texts": texts, "sampled_rss_mb": max(sampled, default=np.nan)}


def measure(target: Path, name: str, naive: bool, batches: list[list[str]], levels: list[int], seconds: float,
            log_dir: Path) -> tuple[list[dict], float | None]:
    """One server (`name` in the table), every level; returns the rows and the peak RSS of loading the model."""
    server = Server(target, name, naive, log_dir)
    try:
        load_peak = server.peak_rss_mb()
        asyncio.run(load_level(server, batches, 1, min(seconds, 2.0)))  # warm-up, not reported
        rows = []
        for clients in levels:
            server.reset_peak()
            before = server.health()
            result = asyncio.run(load_level(server, batches, clients, seconds))
            after = server.health()
            passes = after["forward_passes"] - before["forward_passes"]
            peak = server.peak_rss_mb()
            rows.append({"clients": clients, "server": name, **result,
                         "texts_per_pass": (after["texts"] - before["texts"]) / passes if passes else np.nan,
                         "peak_rss_mb": peak if peak is not None else result["sampled_rss_mb"]})
            print(f"{name:>14} {clients:>3} clients: {result['texts_per_s']:8.1f} texts/s, "
                  f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}",
                  flush=True)
        return rows, load_peak
    finally:
        server.stop()


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def report(rows: list[dict], load_peaks: dict, args, run_info: str) -> str:
    naive = {r["clients"]: r for r in rows if r["server"] == NAIVE}
    torch_batched = {r["clients"]: r for r in rows if r["server"] == BATCHED}
    lines = [f"# sendit serve under load, {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {machine()}. Run: `{args.run}` ({run_info}). Each request: {args.texts_per_request} "
             f"tweets from `{args.texts}`; {args.seconds:g} s per level; clients (asyncio + httpx, one process) "
             "and server share the machine, on loopback.", "",
             f"Command: `{' '.join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])}`", "",
             f"{BATCHED}: `sendit serve RUN` defaults (wait up to 5 ms for up to 64 texts); {NAIVE}: `sendit serve "
             f"RUN --naive` (one request per forward pass, one at a time)"
             + (f"; {EXPORTED}: `sendit serve {args.export}` (ONNX Runtime, batched as torch)" if args.export else "")
             + ". Latency is per request; peak RSS is the server's high-water mark during the level.", "",
             "| clients | server | texts/s | vs naive | vs torch batched | p50 ms | p99 ms | errors "
             "| texts per forward pass | peak RSS MB |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratios = [_ratio(r, base.get(r["clients"])) for base in (naive, torch_batched)]
        lines.append(f"| {r['clients']} | {r['server']} | {r['texts_per_s']:,.1f} | {ratios[0]} | {ratios[1]} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['texts_per_pass']:.1f} | "
                     f"{r['peak_rss_mb']:,.0f} |")
    lines += ["", "Peak RSS while loading the model: "
              + ", ".join(f"{name} {peak:,.0f} MB" for name, peak in load_peaks.items() if peak is not None), ""]
    return "\n".join(lines)


def _ratio(row: dict, base: dict | None) -> str:
    if not base or base is row or not base["texts_per_s"]:
        return "-"
    return f"{row['texts_per_s'] / base['texts_per_s']:.2f}x"


BATCHED, NAIVE, EXPORTED = "torch batched", "torch naive", "export batched"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="A run directory (e.g. runs/quickstart/runs/<lora run>)")
    ap.add_argument("--seconds", type=float, default=60.0, help="Duration of each level")
    ap.add_argument("--clients", default="1,8,32", help="Concurrent clients per level")
    ap.add_argument("--texts", type=Path, help="CSV with a text column (default: the run's predictions.csv)")
    ap.add_argument("--texts-per-request", type=int, default=8)
    ap.add_argument("--export", type=Path, help="An export of RUN (`sendit export RUN -o DIR --quantize int8`), "
                    "served and measured the same way")
    ap.add_argument("--no-naive", action="store_true", help="Skip the naive torch server")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.md")
    args = ap.parse_args()
    import pandas as pd

    from sendit.config import load_run

    args.texts = args.texts or args.run / "predictions.csv"
    texts = pd.read_csv(args.texts, dtype=str, keep_default_na=False)["text"].tolist()
    n = args.texts_per_request
    batches = [texts[i:i + n] for i in range(0, len(texts) - n + 1, n)]
    cfg = load_run(args.run / "config.yaml")
    run_info = f"{cfg.method.name} on {cfg.model.name}, inference precision {cfg.train.eval_precision}"
    levels = [int(c) for c in args.clients.split(",")]
    rows, load_peaks = [], {}
    servers = [(args.run, BATCHED, False)] + ([] if args.no_naive else [(args.run, NAIVE, True)])
    servers += [(args.export, EXPORTED, False)] if args.export else []
    with tempfile.TemporaryDirectory() as logs:
        for target, name, naive in servers:
            measured, load_peaks[name] = measure(target, name, naive, batches, levels, args.seconds, Path(logs))
            rows += measured
    rows.sort(key=lambda r: (r["clients"], r["server"]))
    text = report(rows, load_peaks, args, run_info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")
    if any(r["errors"] for r in rows):
        sys.exit("some requests failed: the server must answer every one")


if __name__ == "__main__":
    main()
