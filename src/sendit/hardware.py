"""Where a run computes and in which precision: rules where they are reliable, measurement elsewhere.

Device (`train.device`): `auto` takes CUDA, then Apple's MPS, then the CPU.

Precision (`train.precision` for training, `train.eval_precision` for validation and inference):
- CUDA: bf16 where the GPU computes it natively (compute capability >= 8.0: Ampere and later),
  else fp16 with loss scaling. `torch.cuda.is_bf16_supported()` alone is not trusted: it reports
  True on GPUs that only emulate bf16.
- CPU and MPS: timed. CPU flags do not say which is faster: on a Xeon with `avx512_bf16`, bf16
  matmuls ran at half the fp32 speed and bf16 training was 1.45x slower than fp32. `auto` times a
  few training steps (forward passes, for inference) of the run's own model on a batch of its own
  data (rows of the median length) in each precision, warm-up excluded, best of a few, and keeps the
  fastest. A bf16 matmul more than MATMUL_GATE times slower than fp32 (CPUs without bf16 units,
  e.g. AVX2 only) settles it for fp32 without timing steps that would take minutes.

Each measured decision is cached in `<cache_dir>/precision.json` under the CPU model, torch version,
thread count and model shape, so it is measured once per machine, model and thread count. Every
decision carries its reason (the timings), written to the run's metrics and shown by `sendit doctor`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from sendit.batching import Encoded, collate
from sendit.config import DEVICES, ConfigError
from sendit.io import atomic_write_text
from sendit.measure import matmul_gflops
from sendit.models import cache_dir
from sendit.provenance import cpu_model, version

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CACHE_FILE = "precision.json"
MATMUL_GATE = 4.0  # bf16 matmuls this many times slower than fp32: bf16 steps are not timed
TIMED_STEPS = 2  # timed after one warm-up step; the best is kept (noise only ever slows a step down)
GIVE_UP = 3.0  # a precision whose warm-up step takes this many times fp32's best step is not timed further


@dataclass
class Decision:
    """A precision and why it was chosen; `seconds` per training step or forward pass, by precision."""

    precision: str
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(requested: str, setting: str = "train.device") -> str:
    """The device a run uses: `auto` takes CUDA, then MPS, then the CPU. `setting` names where the
    request came from (`--device` on the command line) in the error for a device torch cannot see."""
    if requested not in DEVICES:
        raise ConfigError(f"{setting}={requested!r}: one of {', '.join(DEVICES)}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}=cuda: torch sees no CUDA device (a CPU-only torch build, or no driver)")
    if requested == "mps" and not mps_available():
        raise ConfigError(f"{setting}=mps: torch sees no Apple MPS device (needs Apple silicon and macOS 12.3+)")
    return requested


def cuda_capability() -> tuple[int, int]:
    return torch.cuda.get_device_capability()


def cuda_decision() -> Decision:
    major, minor = cuda_capability()
    if (major, minor) >= (8, 0):
        return Decision("bf16", f"CUDA compute capability {major}.{minor} >= 8.0: native bf16")
    return Decision("fp16", f"CUDA compute capability {major}.{minor} < 8.0: no native bf16, fp16 with loss scaling")


def autocast(device: str, precision: str):
    """Autocast to `precision` on `device` (fp32: nothing)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=DTYPES[precision])


def candidates(device: str) -> list[str]:
    """The precisions `auto` times: fp16 on the CPU has no fast kernels (minutes per minilm step here)."""
    return ["fp32", "bf16", "fp16"] if device == "mps" else ["fp32", "bf16"]


def representative_batch(encoded: Encoded, rows: int, pad_id: int, left_pad: bool = False) -> dict:
    """`rows` examples of the median length (the nearest to it), labels included: a typical batch.
    Fewer examples than `rows` (a server's first request, one text to `sendit predict`) are repeated to
    fill it: the decision is cached and reused for full batches, and a tiny batch favours fp32 (bf16's
    casts cost more than its faster matmuls save there)."""
    lengths = encoded.lengths
    nearest = np.argsort(np.abs(lengths - np.median(lengths)), kind="stable")[:rows]
    return collate(encoded, np.resize(nearest, rows), pad_id, left_pad)


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def _best_seconds(step: Callable[[], None], device: str, limit: float | None = None) -> float:
    """Best seconds of TIMED_STEPS steps after a warm-up; just the warm-up's when it exceeds `limit`."""
    start = time.perf_counter()
    step()  # warm-up: kernel selection, allocations
    _synchronize(device)
    warm_up = time.perf_counter() - start
    if limit is not None and warm_up > limit:
        return warm_up
    best = float("inf")
    for _ in range(TIMED_STEPS):
        start = time.perf_counter()
        step()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def time_training(model, batch: dict, device: str, precision: str, limit: float | None = None) -> float:
    """Best seconds of a training step (forward, backward, AdamW) in `precision`, on a copy of the
    model: the run's own weights, and its random state, are left as they were."""
    model = copy.deepcopy(model).to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    scaler = torch.amp.GradScaler(device) if precision == "fp16" else None

    def step():
        with autocast(device, precision):
            loss = model(**batch).loss
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with torch.random.fork_rng(devices=[]):
        return _best_seconds(step, device, limit)


def time_inference(model, batch: dict, device: str, precision: str, limit: float | None = None) -> float:
    """Best seconds of a forward pass in `precision` (eval mode, no gradients)."""
    batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    was_training = model.training
    model.eval()

    def step():
        with torch.inference_mode(), autocast(device, precision):
            model(**batch)

    try:
        return _best_seconds(step, device, limit)
    finally:
        model.train(was_training)


def cache_key(kind: str, device: str, model, rows: int) -> str:
    """What a measured decision depends on: machine, torch, threads, model shape, rows per batch (and,
    for training, how many parameters train: LoRA's backward pass is not full fine-tuning's)."""
    config = model.config
    key = {"kind": kind, "device": device, "cpu": cpu_model(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "rows": rows, "model": type(config).__name__,
           "hidden": config.hidden_size, "layers": config.num_hidden_layers, "vocab": config.vocab_size}
    if kind == "train":
        key["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return json.dumps(key, sort_keys=True)


def _read_cache() -> dict:
    try:
        return json.loads((cache_dir() / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    atomic_write_text(cache_dir() / CACHE_FILE, json.dumps(cache, indent=1))


def measure(device: str, probe: Callable[[str, float | None], float], hidden_size: int) -> Decision:
    """Time each candidate precision with `probe(precision, limit)` (seconds per step) and keep the
    fastest; after fp32, a candidate whose warm-up step exceeds GIVE_UP x fp32's is not timed further."""
    if device == "cpu":
        fp32, bf16 = (matmul_gflops(dtype, hidden_size) for dtype in (torch.float32, torch.bfloat16))
        if fp32 > MATMUL_GATE * bf16:
            return Decision("fp32", f"bf16 matmuls {fp32 / bf16:.1f}x slower than fp32 ({bf16:.1f} vs "
                                    f"{fp32:.1f} GFLOP/s at {hidden_size}^2): steps not timed")
    seconds, failed = {}, []
    for precision in candidates(device):
        try:
            limit = GIVE_UP * seconds["fp32"] if "fp32" in seconds else None
            seconds[precision] = probe(precision, limit)
        except RuntimeError:  # a precision this device or model lacks (bf16 on older macOS)
            failed.append(precision)
    if not seconds:
        return Decision("fp32", f"no precision could be timed (failed: {', '.join(failed)})")
    best = min(seconds, key=seconds.get)
    timings = ", ".join(f"{p} {s * 1000:.0f} ms" for p, s in seconds.items())
    unusable = f"; failed: {', '.join(failed)}" if failed else ""
    return Decision(best, f"fastest measured ({timings}{unusable})", seconds)


def decide(kind: str, requested: str, device: str, model, rows: int,
           probe: Callable[[str, float | None], float]) -> Decision:
    """The precision for `kind` ("train" or "inference") at `rows` examples per batch: as configured,
    CUDA's rule, or measured with `probe` once per cache key."""
    if requested != "auto":
        field_name = "precision" if kind == "train" else "eval_precision"
        return Decision(requested, f"train.{field_name}: {requested} in the config")
    if device == "cuda":
        return cuda_decision()
    key = cache_key(kind, device, model, rows)
    cached = _read_cache().get(key)
    if cached:
        return Decision(cached["precision"], f"{cached['reason']} (cached)", cached["seconds"])
    decision = measure(device, probe, model.config.hidden_size)
    decision = replace(decision, reason=f"{decision.reason}; {measured_when()}")
    if busy():  # other jobs distort the timings: use this decision, measure again next time
        return replace(decision, reason=f"{decision.reason}; not cached: more runnable jobs than cores")
    _write_cache(_read_cache() | {key: asdict(decision)})
    return decision


def busy() -> bool:
    """More runnable jobs than cores (1-minute load average): timings taken now would be cached wrong."""
    load = load_average()
    return load is not None and load > (os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average, None where the platform has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def measured_when() -> str:
    """When and under what load a decision was measured: timings taken on a busy machine mislead, and a
    cached decision is kept until `sendit doctor --remeasure` forgets it."""
    when = f"measured {time.strftime('%Y-%m-%d %H:%M')}"
    load = load_average()
    return when if load is None else f"{when} at load {load:.1f} on {os.cpu_count()} cores"


def forget(kind: str, device: str, model, rows: int) -> None:
    """Drop the cached decision for `kind` on this device, model, thread count and batch rows: measured
    again next time."""
    cache = _read_cache()
    if cache.pop(cache_key(kind, device, model, rows), None) is not None:
        _write_cache(cache)


def training_precision(requested: str, device: str, model, batch: dict) -> Decision:
    if requested == "auto" and not any(p.requires_grad for p in model.parameters()):  # zero-shot
        return Decision("fp32", "nothing to train: not timed")
    return decide("train", requested, device, model, len(batch["input_ids"]),
                  lambda p, limit: time_training(model, batch, device, p, limit))


def inference_precision(requested: str, device: str, model, batch: dict) -> Decision:
    return decide("inference", requested, device, model, len(batch["input_ids"]),
                  lambda p, limit: time_inference(model, batch, device, p, limit))


LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes")


def synthetic_batch(vocab_size: int, rows: int, length: int) -> dict:
    """A batch of `rows` x `length` random ordinary tokens (ids past the special ones), labels 0."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(1000, vocab_size // 2), vocab_size, (rows, length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.zeros(rows, dtype=torch.long)}


def machine_facts() -> list[tuple[str, str]]:
    """(what, value) rows describing this machine for `sendit doctor`: devices, CPU, threads, matmul
    peaks, library versions."""

    devices = ["cpu"]
    if torch.cuda.is_available():
        major, minor = cuda_capability()
        devices.append(f"cuda ({torch.cuda.get_device_name()}, compute capability {major}.{minor})")
    if mps_available():
        devices.append("mps")
    facts = [("devices", ", ".join(devices)), ("device (auto)", resolve_device("auto")), ("CPU", cpu_model()),
             ("cores", str(os.cpu_count())), ("torch threads", str(torch.get_num_threads()))]
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        facts.append((f"CPU matmul {name}", f"{matmul_gflops(dtype, 512):.1f} GFLOP/s (512^2)"))
    facts += [(library, version(library) or "not installed") for library in LIBRARIES]
    return facts
