#!/usr/bin/env python3
"""`make gpu-check`: sendit on a CUDA GPU in about 8 minutes, written to benchmarks/results/gpu.md.

For a freshly started GPU machine that has torch (with CUDA) but maybe not sendit's other packages:
installs what is missing (sendit itself with --no-deps, so pip never swaps the machine's CUDA torch
for the CPU wheel pyproject pins), then runs on the GPU the tiny-model method tests
(SENDIT_TEST_DEVICE=cuda), the quickstart on 2,000 tweets in bf16 and in fp16 beside the same study
on the CPU, `sendit predict`, a QLoRA run (bitsandbytes) and `sendit serve` where their packages
install. Each step has a time limit; a failed step is reported in gpu.md, not hidden.

Without a CUDA device it says so and exits 1, writing nothing. Stdlib only until torch is checked.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
TWEETS = "data/sentiment140/train_random20k_6col/sentiment140_sample.csv"  # the quickstart's file
EXTRAS = {"bitsandbytes": "bitsandbytes>=0.50", "fastapi": "fastapi>=0.110", "uvicorn": "uvicorn>=0.29",
          "httpx": "httpx>=0.27", "pytest": "pytest>=8"}  # module: requirement (QLoRA, serve, tests)


def cuda_or_exit() -> str:
    """The GPU's name; without torch or a CUDA device, a clear message and exit code 1."""
    try:
        import torch
    except ImportError:
        sys.exit("gpu-check: torch is not installed; install a CUDA build of torch first. Nothing measured.")
    if not torch.cuda.is_available():
        sys.exit(f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build: "
                 f"{torch.version.cuda or 'none'}). Nothing measured; benchmarks/results/gpu.md not written.")
    major, minor = torch.cuda.get_device_capability()
    return (f"{torch.cuda.get_device_name()} (compute capability {major}.{minor}), torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}")


def pip(*args: str) -> bool:
    return subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], cwd=ROOT).returncode == 0


def install() -> list[str]:
    """Install sendit (--no-deps) and its packages but torch where missing; notes of what failed."""
    import importlib.util

    notes = []
    if importlib.util.find_spec("sendit") is None and not pip("--no-deps", "-e", "."):
        sys.exit("gpu-check: `pip install --no-deps -e .` failed")
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = [r for r in requirements if not r.startswith("torch")]
    if not pip(*needed):
        sys.exit(f"gpu-check: could not install sendit's packages ({' '.join(needed)})")
    for module, requirement in EXTRAS.items():
        if importlib.util.find_spec(module) is None and not pip(requirement):
            notes.append(f"{requirement} did not install: the steps that need it are skipped")
    return notes


def step(name: str, command: list[str], limit: int, env: dict | None = None) -> dict:
    """Run one step with a time limit: seconds, return code and the output's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, **(env or {})})
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, output = "timeout", f"{err.stdout or ''}{err.stderr or ''}"
    seconds = time.perf_counter() - start
    print(f"{name}: {'ok' if code == 0 else f'FAILED ({code})'} in {seconds:.0f} s", flush=True)
    return {"name": name, "code": code, "seconds": seconds, "tail": output[-1500:] if code else output[-300:]}


def sendit(*args: str) -> list[str]:
    return [sys.executable, "-m", "sendit.cli", *args]


def study(out: Path, device: str, precision: str, sample: int) -> tuple[dict, list[dict]]:
    """The quickstart on `sample` tweets on `device` in `precision` (training and inference); its rows."""
    sets = [f"output_dir={out}", f"data.sample={sample}", f"train.device={device}",
            f"train.precision={precision}", f"train.eval_precision={precision}"]
    overrides = [arg for s in sets for arg in ("-s", s)]
    result = step(f"quickstart {device} {precision}", sendit("study", str(QUICKSTART), *overrides), 360)
    rows = list(csv.DictReader((out / "quickstart" / "results.csv").open())) if result["code"] == 0 else []
    return result, rows


def serve_check(run_dir: Path, port: int = 8765) -> dict:
    """Start `sendit serve` on the GPU, time its start and one request of 8 tweets."""
    start = time.perf_counter()
    server = subprocess.Popen(sendit("serve", str(run_dir), "--device", "cuda", "--port", str(port)), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - start < 120:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    return {"name": "serve", "code": server.returncode, "seconds": 0,
                            "tail": server.stderr.read()[-1500:]}
                time.sleep(0.5)
        started = time.perf_counter() - start
        body = json.dumps({"texts": ["i love this", "so sad today"] * 4}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", body,
                                         {"Content-Type": "application/json"})
        sent = time.perf_counter()
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        latency = time.perf_counter() - sent
        return {"name": "serve", "code": 0, "seconds": started,
                "tail": f"started in {started:.1f} s; 8 tweets answered in {latency * 1000:.0f} ms: "
                        f"{[p['label'] for p in answer['predictions']][:2]}"}
    except OSError as err:
        return {"name": "serve", "code": "error", "seconds": time.perf_counter() - start, "tail": str(err)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def number(row: dict, key: str, digits: int = 1) -> str:
    return f"{float(row[key]):.{digits}f}" if row.get(key) not in (None, "") else "-"


def method_table(runs: dict[str, list[dict]]) -> list[str]:
    """One row per (study, method): device, precision, speed, peak memory and its kind, accuracy."""
    out = ["| study | method | device | precision (train/infer) | train s | train ex/s | infer ex/s | "
           "peak memory MB (kind) | test acc | CPU test acc |", "|---|---|---|---|---|---|---|---|---|---|"]
    cpu = {row["method"]: row for row in runs.get("cpu", [])}
    for label, rows in runs.items():
        for row in rows:
            on_cpu = number(cpu[row["method"]], "test_accuracy", 4) if row["method"] in cpu else "-"
            out.append(f"| {label} | {row['method']} | {row['device']} | {row['precision']}/"
                       f"{row['inference_precision']} | {number(row, 'runtime_sec')} | "
                       f"{number(row, 'train_examples_per_s')} | {number(row, 'inference_examples_per_s')} | "
                       f"{number(row, 'peak_memory_mb', 0)} ({row['memory_kind']}) | "
                       f"{number(row, 'test_accuracy', 4)} | {on_cpu} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=2000, help="quickstart tweets (80/10/10 split)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "gpu_check"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.md"))
    args = ap.parse_args()
    gpu = cuda_or_exit()
    if not (ROOT / TWEETS).is_file():
        sys.exit(f"gpu-check: no {TWEETS}: run `make data` (or link the shared data) first")
    began = time.perf_counter()
    notes = install()
    work = Path(args.work)
    tests = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "tests/test_methods.py"]
    steps = [step("tiny-model method tests on cuda", tests, 240, {"SENDIT_TEST_DEVICE": "cuda"})]
    import torch

    precisions = ["bf16", "fp16"] if torch.cuda.get_device_capability() >= (8, 0) else ["fp16"]
    if "bf16" not in precisions:
        notes.append("bf16 not run: this GPU has no native bf16 (compute capability < 8.0)")
    runs = {}
    for device, precision in [("cuda", p) for p in precisions] + [("cpu", "auto")]:
        label = "cpu" if device == "cpu" else f"cuda {precision}"
        result, runs[label] = study(work / f"{device}-{precision}", device, precision, args.sample)
        steps.append(result)
    lora = next(iter((work / f"cuda-{precisions[0]}" / "quickstart" / "runs").glob("lora-*")), None)
    if lora:
        predict = sendit("predict", str(lora), "i love this", "so sad", "--device", "cuda", "-o", "csv")
        steps.append(step("predict on cuda", predict, 120))
        steps.append(serve_check(lora) if "fastapi" not in " ".join(notes) else
                     {"name": "serve", "code": "skipped", "seconds": 0, "tail": "fastapi/uvicorn missing"})
    if "bitsandbytes" not in " ".join(notes):
        train = sendit("train", "--method", "qlora", "--sample", str(args.sample), "--data-path", TWEETS,
                       "--out", str(work / "qlora"), "-s", "train.device=cuda")
        qlora = step("qlora on cuda", train, 300)
        steps.append(qlora)
        if qlora["code"] == 0:
            runs["cuda qlora"] = [json.loads((work / "qlora" / "metrics.json").read_text())["row"]]
    write(Path(args.out), gpu, steps, runs, notes, time.perf_counter() - began, args)


def write(path: Path, gpu: str, steps: list[dict], runs: dict, notes: list[str], seconds: float, args) -> None:
    out = [f"# sendit on a CUDA GPU (`make gpu-check`), {time.strftime('%Y-%m-%d')}", "",
           f"GPU: {gpu}. Whole check: {seconds / 60:.1f} min. Quickstart: {args.sample:,} Sentiment140 tweets "
           "(80/10/10), minilm, one epoch; the CPU study ran on the same machine's CPU in `auto` precision.", "",
           "| step | result | seconds | output (tail) |", "|---|---|---|---|"]
    for s in steps:
        tail = " ".join(s["tail"].split())[-300:].replace("|", "/")
        out.append(f"| {s['name']} | {'ok' if s['code'] == 0 else s['code']} | {s['seconds']:.0f} | {tail} |")
    out += ["", *method_table(runs), "", *(f"- {note}" for note in notes)]
    path.write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
