"""Serve saved runs and exports over HTTP: `POST /v1/predict`, `GET /v1/models`, `GET /health` (FastAPI, OpenAPI
at /docs). An export (`sendit export`) is served by ONNX Runtime; a server of exports only never imports torch.

Memory: adapter runs (LoRA, DoRA, IA3, prompt tuning) leave the base model frozen, so runs over
the same base hold one copy of it. PEFT refuses to put adapters of different types (LoRA and IA3)
into one PeftModel, so instead of PEFT multi-adapter each run keeps its own PeftModel (adapter,
head and hooks exactly as `artifacts.load` rebuilt them) and its frozen base tensors are swapped for the
equal tensors already in memory; the duplicates are freed. Runs are shared only when every frozen
base tensor is equal, which also keeps apart tiny test models built from different seeds.

Throughput: one inference thread serves every model. Under concurrent load, requests for the same
model that arrive within `batch_wait_ms` of the first (up to `max_batch` texts) run as one forward
pass, and while a pass runs the next batch fills up, so texts/s grows with load while the event
loop only parses and validates; a lone request is not held for the window.
"""
# No `from __future__ import annotations`: FastAPI must resolve the request models defined in create_app.
import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Callable, Sequence

@dataclass
class Settings:
    max_texts: int = 256  # texts per request
    max_chars: int = 2000  # characters per text
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_batch: int = 64  # texts per forward pass
    naive: bool = False  # benchmark baseline: one request per forward pass, no waiting
    device: str = "auto"  # where runs compute (auto | cpu | cuda | mps); exports always on the CPU


@dataclass
class Served:
    """One model the server answers for: a run or an export, loaded."""

    name: str
    run_dir: Path
    predictor: Any  # artifacts.Predictor (a run) or deploy.ExportPredictor (an export)
    method: str
    base_model: str
    base: int | None  # index of the shared frozen base (adapter runs); None: weights of its own


def parse_runs(specs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """`DIR` (named after the directory) or `NAME=DIR`."""
    parsed = []
    for spec in map(str, specs):
        name, sep, path = spec.partition("=")
        named = sep and not Path(spec).exists()
        parsed.append((name, Path(path)) if named else (Path(spec).resolve().name, Path(spec)))
    return parsed


def load_runs(specs: Sequence[str | Path], device: str = "auto") -> dict[str, Served]:
    """Load and validate every run (onto `device`) and export (ONNX Runtime, CPU); adapter runs over an
    equal base share its tensors, and an adapter alone on its base is folded into it (its method's
    `for_inference`: no adapter matmuls)."""
    from sendit.config import ConfigError
    from sendit.deploy import ExportPredictor
    from sendit.predict import open_predictor

    served: dict[str, Served] = {}
    bases: list[dict] = []
    for name, run_dir in parse_runs(specs):
        if name in served:
            raise ConfigError(f"two runs are named '{name}' ({served[name].run_dir}, {run_dir}): name them NAME=DIR")
        predictor = open_predictor(run_dir, device, as_trained=True)
        if isinstance(predictor, ExportPredictor):  # its own ONNX Runtime session
            source = predictor.manifest["source"]
            served[name] = Served(name, run_dir, predictor, source["method"], source["model"], None)
            continue
        from sendit.methods import METHODS, get_method  # torch: only once a run (not an export) is served

        cfg = predictor.cfg
        base = share_base(predictor.model, bases) if METHODS[cfg.method.name].shares_base else None
        served[name] = Served(name, run_dir, predictor, cfg.method.name, cfg.model.name, base)
    sharing = Counter(entry.base for entry in served.values() if entry.base is not None)
    for entry in served.values():
        if entry.base is not None and sharing[entry.base] == 1:
            model = get_method(entry.predictor.cfg.method).for_inference(entry.predictor.model)
            entry.predictor = replace(entry.predictor, model=model)
    return served


def frozen_base(model) -> dict[str, tuple[Any, str]]:
    """(module, attribute) of each frozen base weight under a PeftModel, keyed by its name without
    PEFT's wrappers (`.base_layer`), so that LoRA, IA3 and prompt-tuning models use the same keys.
    The head's frozen original (`original_module`) is left out: each run's head is its own."""
    weights = {}
    for module_name, module in model.get_base_model().named_modules():
        if "original_module" in module_name.split("."):
            continue
        for attribute, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                weights[f"{module_name}.{attribute}".replace(".base_layer.", ".")] = (module, attribute)
    return weights


def share_base(model, bases: list[dict]) -> int:
    """Point the model's frozen base weights at an equal base in `bases`, or add its own; return the index."""
    import torch

    weights = frozen_base(model)
    tensors = {key: getattr(module, attribute) for key, (module, attribute) in weights.items()}
    for index, base in enumerate(bases):
        if base.keys() == tensors.keys() and all(torch.equal(base[key], t) for key, t in tensors.items()):
            for key, (module, attribute) in weights.items():
                setattr(module, attribute, base[key])
            return index
    bases.append(tensors)
    return len(bases) - 1


@dataclass(eq=False)
class _Request:
    model: str
    texts: list[str]
    future: Future = field(default_factory=Future)


class Batcher:
    """Collects requests on one inference thread; `run(model, texts)` returns one result per text."""

    def __init__(self, run: Callable[[str, list[str]], list], wait_s: float, max_batch: int, naive: bool = False):
        self.run, self.wait_s, self.max_batch, self.naive = run, wait_s, max_batch, naive
        self.pending: list[_Request] = []
        self.busy = False  # the last pass served several requests: more are likely on their way
        self.ready = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._serve, name="sendit-inference", daemon=True)
        self.thread.start()

    def submit(self, model: str, texts: list[str]) -> Future:
        request = _Request(model, texts)
        with self.ready:
            if self.closed:
                raise RuntimeError("the server is shutting down")
            self.pending.append(request)
            self.ready.notify()
        return request.future

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.thread.join()

    def _serve(self) -> None:
        while batch := self._next_batch():
            try:
                results = self.run(batch[0].model, [text for request in batch for text in request.texts])
            except Exception as err:  # a bug, not client input: each waiting request gets a 500
                for request in batch:
                    request.future.set_exception(err)
                continue
            start = 0
            for request in batch:
                request.future.set_result(results[start:start + len(request.texts)])
                start += len(request.texts)

    def _next_batch(self) -> list[_Request]:
        """The oldest request and, within the wait window, later ones for the same model."""
        with self.ready:
            while not self.pending and not self.closed:
                self.ready.wait()
            if self.closed:
                for request in self.pending:
                    request.future.set_exception(RuntimeError("the server is shutting down"))
                return []
            model = self.pending[0].model
            # A lone client gains nothing from waiting (it sends its next request only after this one's
            # answer), so the window opens only under concurrent load.
            wait = self.wait_s if not self.naive and (self.busy or len(self.pending) > 1) else 0
            deadline = time.monotonic() + wait
            while self._texts_for(model) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self.ready.wait(left)
            batch, texts = [], 0
            for request in self.pending:
                if request.model == model and (not batch or (not self.naive and texts + len(request.texts)
                                                             <= self.max_batch)):
                    batch.append(request)
                    texts += len(request.texts)
            self.pending = [request for request in self.pending if request not in batch]
            self.busy = len(batch) > 1
            return batch

    def _texts_for(self, model: str) -> int:
        return sum(len(request.texts) for request in self.pending if request.model == model)


class BodyLimit:
    """Refuse bodies larger than any valid request (413) before they are read and parsed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        length = dict(scope.get("headers", [])).get(b"content-length", b"")
        if scope["type"] == "http" and length.isdigit() and int(length) > self.max_bytes:
            from fastapi.responses import JSONResponse

            response = JSONResponse({"detail": f"request body over {self.max_bytes:,} bytes"}, status_code=413)
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(runs: Sequence[str | Path], settings: Settings | None = None):
    """The FastAPI app serving `runs` (DIR or NAME=DIR); loading fails with RunError for a bad run."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints

    from sendit.predict import predict_probabilities

    settings = settings or Settings()
    models = load_runs(runs, settings.device)
    shared = [s.base for s in models.values() if s.base is not None]
    stats = {"requests": 0, "texts": 0, "forward_passes": 0}

    def count_pass(_size: int) -> None:
        stats["forward_passes"] += 1

    def run(name: str, texts: list[str]) -> list[dict]:
        predictor = models[name].predictor
        labels = predictor.label_names
        probs = predict_probabilities(predictor, texts, settings.max_batch, on_batch=count_pass)
        return [{"label": labels[row.argmax()], "probabilities": dict(zip(labels, row.tolist()))} for row in probs]

    batcher = Batcher(run, settings.batch_wait_ms / 1000, settings.max_batch, settings.naive)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    Text = Annotated[str, StringConstraints(strict=True, max_length=settings.max_chars)]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[Text] = Field(min_length=1, max_length=settings.max_texts,
                                  description=f"1 to {settings.max_texts} texts of at most {settings.max_chars} "
                                              "characters, cleaned as the run's training data was")
        model: str | None = Field(None, description="A name from /v1/models; optional when one model is served")

    class Prediction(BaseModel):
        label: str
        probabilities: dict[str, float]

    class PredictResponse(BaseModel):
        model: str
        predictions: list[Prediction]

    class ModelInfo(BaseModel):
        name: str
        method: str
        base_model: str
        labels: list[str]
        shared_base: bool = Field(description="Its frozen base weights are one copy shared with other models")

    app = FastAPI(title="sendit", summary="Sentiment labels from runs trained by sendit", lifespan=lifespan)
    max_body = settings.max_texts * (settings.max_chars * 12 + 8) + 4096  # JSON escapes: up to 12 bytes a character
    app.add_middleware(BodyLimit, max_bytes=max_body)

    @app.post("/v1/predict", response_model=PredictResponse,
              responses={400: {"description": "No model named"}, 404: {"description": "Unknown model"},
                         413: {"description": "Body too large"}})
    async def predict(request: PredictRequest):
        """Label each text: the most probable label and every label's probability."""
        if request.model is None and len(models) > 1:
            raise HTTPException(400, f"several models are served: name one in 'model' ({', '.join(models)})")
        name = request.model or next(iter(models))
        if name not in models:
            raise HTTPException(404, f"unknown model '{name}'; served: {', '.join(models)}")
        stats["requests"] += 1
        stats["texts"] += len(request.texts)
        predictions = await asyncio.wrap_future(batcher.submit(name, request.texts))
        return {"model": name, "predictions": predictions}

    @app.get("/v1/models", response_model=dict[str, list[ModelInfo]])
    async def list_models():
        """Every served model, and whether it shares its base weights with others."""
        return {"models": [{"name": s.name, "method": s.method, "base_model": s.base_model,
                            "labels": s.predictor.label_names, "shared_base": shared.count(s.base) > 1}
                           for s in models.values()]}

    @app.get("/health")
    async def health():
        """Liveness, and counters: texts per forward pass = texts / forward_passes shows the batching."""
        return {"status": "ok", "models": len(models), **stats}

    app.state.models = models
    return app
