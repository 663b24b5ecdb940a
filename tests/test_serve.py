"""`sendit serve`: answers as each run does (and as `predict` and the evaluation do), adapters over one
base share one copy of it, concurrent requests are batched, and client mistakes get a 4xx, never a 5xx."""
import asyncio
import io
import shutil
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import LABELS, eval_probabilities, tiny_data, tiny_run
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sendit.artifacts import Predictor
from sendit.cli import app as cli
from sendit.predict import predict_probabilities
from sendit.serve import Settings, create_app, frozen_base, parse_runs

runner = CliRunner()
ADAPTERS = ["lora_a", "lora_b", "ia3", "dora", "prompt"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two LoRA runs differing in learning rate, IA3, DoRA and prompt tuning on one base; LoRA on another
    seed (a tiny model's base weights come from its seed); full fine-tuning."""
    root = tmp_path_factory.mktemp("runs")
    data = tiny_data(root)
    specs = {"lora_a": ("lora", 1e-2, 1), "lora_b": ("lora", 3e-3, 1), "ia3": ("ia3", 1e-2, 1),
             "dora": ("dora", 1e-2, 1), "prompt": ("prompt_tuning", 1e-2, 1),
             "lora_seed2": ("lora", 1e-2, 2), "full": ("full", 3e-3, 1)}
    return {name: tiny_run(root / name, data, method, lr, seed) for name, (method, lr, seed) in specs.items()}


@pytest.fixture(scope="module")
def server(runs):
    application = create_app(list(runs.values()))
    with TestClient(application) as client:
        yield client


@pytest.fixture(scope="module")
def small(runs):
    """Tight limits and a long batching window, over two models."""
    application = create_app([runs["lora_a"], runs["ia3"]], Settings(max_texts=4, max_chars=50, batch_wait_ms=300))
    with TestClient(application) as client:
        yield client


def probabilities(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([[p["probabilities"][name] for name in LABELS] for p in response.json()["predictions"]])


def test_each_model_answers_exactly_as_its_own_run(server, runs):
    texts = eval_probabilities(runs["lora_a"])[0].text.tolist()
    answers = {}
    for name, run in runs.items():
        answers[name] = probabilities(server.post("/v1/predict", json={"texts": texts, "model": name}))
        alone = predict_probabilities(Predictor.from_run(run), texts)
        np.testing.assert_allclose(answers[name], alone, rtol=0, atol=1e-5)
    for i, a in enumerate(ADAPTERS):
        for b in ADAPTERS[i + 1:]:
            assert np.abs(answers[a] - answers[b]).max() > 1e-4, (a, b)


def test_adapters_over_one_base_hold_one_copy_of_it(server):
    models = server.app.state.models
    bases = {name: {key: getattr(module, attr) for key, (module, attr) in
                    frozen_base(models[name].predictor.model).items()} for name in ADAPTERS}
    first = bases["lora_a"]
    assert len(first) > 20 and all(bases[name].keys() == first.keys() for name in bases)
    for name in ADAPTERS[1:]:
        assert all(bases[name][key] is tensor for key, tensor in first.items()), name
    alone = models["lora_seed2"].predictor.model  # another base: its adapter is folded into it, nothing shared
    assert not hasattr(alone, "peft_config")
    assert not any(param is tensor for param in alone.parameters() for tensor in first.values())
    listed = {m["name"]: m for m in server.get("/v1/models").json()["models"]}
    assert {name: m["shared_base"] for name, m in listed.items()} == {
        **dict.fromkeys(ADAPTERS, True), "lora_seed2": False, "full": False}
    assert listed["ia3"] == {"name": "ia3", "method": "ia3", "base_model": "tiny-bert", "labels": LABELS,
                             "shared_base": True}


def test_server_predict_and_evaluation_agree_in_fp32(server, runs):
    """Labels identical, probabilities within 1e-5, on the run's test split."""
    run = runs["lora_a"]
    expected, probs = eval_probabilities(run)
    texts = expected.text.tolist()
    served = server.post("/v1/predict", json={"texts": texts, "model": "lora_a"})
    np.testing.assert_allclose(probabilities(served), probs, rtol=0, atol=1e-5)
    assert [p["label"] for p in served.json()["predictions"]] == expected.pred_name.tolist()
    out = runner.invoke(cli, ["predict", str(run), "-", "-o", "csv"], input="\n".join(texts) + "\n")
    assert out.exit_code == 0, out.output
    predicted = pd.read_csv(io.StringIO(out.stdout))
    assert predicted.label.tolist() == expected.pred_name.tolist()
    np.testing.assert_allclose(predicted[[f"p_{name}" for name in LABELS]].to_numpy(), probs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("body, status, message", [
    ({"texts": []}, 422, "at least 1 item"),
    ({"texts": ["a"] * 5}, 422, "at most 4 items"),
    ({"texts": ["a" * 51]}, 422, "at most 50 characters"),
    ({"texts": "i love this"}, 422, "valid list"),
    ({"texts": [1, "a"]}, 422, "valid string"),
    ({"texts": [None]}, 422, "valid string"),
    ({"text": ["a"]}, 422, "Field required"),
    ({"texts": ["a"], "model": "lora_a", "extra": 1}, 422, "Extra inputs"),
    (["a"], 422, "valid dictionary"),
    ({"texts": ["a"], "model": 3}, 422, "valid string"),
    ({"texts": ["a"], "model": "nope"}, 404, "unknown model 'nope'; served: lora_a, ia3"),
    ({"texts": ["a"]}, 400, "name one in 'model' (lora_a, ia3)"),
    (b'{"texts": ["a"', 422, "JSON decode error"),
    (b'{"texts": ["\xff"], "model": "ia3"}', 400, "error parsing the body"),
    (b"", 422, "Field required"),
    (b'{"texts": ["' + b"a" * 10_000 + b'"]}', 413, "request body over"),
])
def test_malformed_input_gets_a_4xx_with_a_message(small, body, status, message):
    if isinstance(body, bytes):
        response = small.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    else:
        response = small.post("/v1/predict", json=body)
    assert response.status_code == status, response.text
    assert message in response.text


def test_empty_and_odd_texts_are_answered_as_the_run_answers_them(small, runs):
    """Cleaning leaves nothing of the first three texts: each gets the empty text's answer, the run's own."""
    texts = ["", "@user http://t.co/x #tag", "\U0001F600", "a" * 50]
    served = probabilities(small.post("/v1/predict", json={"texts": texts, "model": "ia3"}))
    np.testing.assert_allclose(served, predict_probabilities(Predictor.from_run(runs["ia3"]), texts), rtol=0, atol=1e-5)
    np.testing.assert_allclose(served[1:3], served[[0, 0]], rtol=0, atol=1e-6)
    assert np.abs(served[3] - served[0]).max() > 1e-4  # a text the model does read


def test_concurrent_requests_share_forward_passes(small):
    """16 requests at once: a few forward passes, each request still gets the answer to its own texts."""
    texts = [[f"i love this {'x ' * i}", f"so sad {i}"] for i in range(16)]  # varied lengths, <= 50 chars
    alone = [probabilities(small.post("/v1/predict", json={"texts": t, "model": "lora_a"})) for t in texts[:2]]
    before = small.get("/health").json()

    async def together():
        transport = httpx.ASGITransport(app=small.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/v1/predict", json={"texts": t, "model": "lora_a"})
                                          for t in texts))

    responses = asyncio.run(together())
    after = small.get("/health").json()
    assert all(r.status_code == 200 and len(r.json()["predictions"]) == 2 for r in responses)
    assert after["requests"] - before["requests"] == 16
    assert after["forward_passes"] - before["forward_passes"] < 16
    for i in range(2):
        np.testing.assert_allclose(probabilities(responses[i]), alone[i], rtol=0, atol=1e-5)


def test_a_lone_request_is_not_held_for_the_batching_window():
    """A 30 s window: the lone first request is answered at once; the two that queue behind its
    forward pass share the next one."""
    import threading

    from sendit.serve import Batcher

    passes, started, release = [], threading.Event(), threading.Event()

    def run(model, texts):
        passes.append(texts)
        started.set()
        release.wait(10)
        return texts

    batcher = Batcher(run, wait_s=30, max_batch=2)
    try:
        first = batcher.submit("m", ["a"])
        assert started.wait(10), "the lone request waited for the batching window"
        queued = [batcher.submit("m", [text]) for text in ("b", "c")]
        release.set()
        assert first.result(timeout=10) == ["a"] and [f.result(timeout=10) for f in queued] == [["b"], ["c"]]
        assert passes == [["a"], ["b", "c"]]
    finally:
        batcher.close()


def test_naive_server_runs_one_request_per_forward_pass(runs):
    with TestClient(create_app([runs["lora_a"]], Settings(naive=True))) as client:
        async def together():
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await asyncio.gather(*(http.post("/v1/predict", json={"texts": ["a", "b"]}) for _ in range(8)))

        assert all(r.status_code == 200 for r in asyncio.run(together()))
        assert client.get("/health").json()["forward_passes"] == 8


def test_health_and_openapi_schema(small):
    assert small.get("/health").json()["status"] == "ok"
    schema = small.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/models", "/health"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]
    assert request["maxItems"] == 4 and request["items"]["maxLength"] == 50


def test_run_names():
    assert parse_runs(["/x/lora-seed1", "best=/x/lora-seed2"]) == [("lora-seed1", Path("/x/lora-seed1")),
                                                                   ("best", Path("/x/lora-seed2"))]


def test_cli_serves_runs_and_refuses_broken_ones_with_their_path(runs, tmp_path, monkeypatch):
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: started.update(app=app, **options))
    out = runner.invoke(cli, ["serve", f"best={runs['lora_a']}", str(runs["ia3"]), "--port", "8123",
                              "--max-texts", "9"])
    assert out.exit_code == 0, out.output
    assert list(started["app"].state.models) == ["best", "ia3"]
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    with TestClient(started["app"]) as client:
        schema = client.get("/openapi.json").json()
    assert schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]["maxItems"] == 9
    broken = shutil.copytree(runs["lora_b"], tmp_path / "broken")
    (broken / "adapter.safetensors").write_bytes(b"\x80\x04 pickled? no")
    for args, message in (([str(runs["lora_a"]), str(broken)], f"{broken / 'adapter.safetensors'}: not a valid"),
                          ([str(tmp_path)], f"{tmp_path}: not a sendit run"),
                          ([str(runs["lora_a"]), f"lora_a={runs['ia3']}"], "two runs are named 'lora_a'")):
        out = runner.invoke(cli, ["serve", *args])
        assert out.exit_code == 2 and message in out.output.replace("\n", ""), out.output
