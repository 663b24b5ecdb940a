"""Issue 18 experiment (python benchmarks/bench_nbits.py [REPS]; paths are the session's, edit them for yours): ONNX Runtime's MatMulNBits (weight-only 8/4-bit, int8 compute at accuracy_level 4)
against the dynamic int8 export and fp32, on the quickstart's full-FT export; ex/s on its 1,972 test tweets."""
import sys, time
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort, pandas as pd
from tokenizers import Tokenizer
from onnxruntime.quantization import matmul_nbits_quantizer as mnq

FP32, INT8, OUT = Path("/work/exports/ft-fp32"), Path("/work/exports/ft-int8"), Path("/work/nbits")
texts = pd.read_csv("/work/fresh/runs/quickstart/runs/full-lr5e-05-bs32-ep1-seed42/predictions.csv", keep_default_na=False)
tok = Tokenizer.from_file(str(FP32 / "tokenizer.json"))
tok.enable_truncation(64)
enc = [e.ids for e in tok.encode_batch(list(texts.text))]
order = np.argsort([len(e) for e in enc])
batches = []
for start in range(0, len(order), 64):
    idx = order[start:start + 64]
    width = max(len(enc[i]) for i in idx)
    ids = np.zeros((len(idx), width), np.int64); mask = np.zeros_like(ids)
    for r, i in enumerate(idx):
        ids[r, :len(enc[i])] = enc[i]; mask[r, :len(enc[i])] = 1
    batches.append((idx, ids, mask))

def variants():
    yield "fp32", FP32 / "model.onnx"
    yield "dynamic int8 (kept)", INT8 / "model.onnx"
    for bits, block, level in [(8, 32, 4), (8, 128, 4), (4, 32, 4), (4, 128, 4)]:
        path = OUT / f"nbits{bits}_b{block}_l{level}.onnx"
        if not path.exists():
            cfg = mnq.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=level, bits=bits)
            q = mnq.MatMulNBitsQuantizer(onnx.load(str(FP32 / "model.onnx")), algo_config=cfg)
            q.process(); q.model.save_model_to_file(str(path), use_external_data_format=False)
        yield f"MatMulNBits {bits}-bit, block {block}, accuracy_level {level}", path

def measure(path, reps):
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 2; opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    preds = np.zeros(len(enc), int); best = 1e9
    for _ in range(reps):
        t = time.perf_counter()
        for idx, ids, mask in batches:
            preds[idx] = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0].argmax(-1)
        best = min(best, time.perf_counter() - t)
    return len(enc) / best, preds

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2
rows = []
reference = None
for name, path in variants():
    rate, preds = measure(path, reps)
    reference = preds if reference is None else reference
    rows.append((name, rate, (preds == texts.label.to_numpy()).mean(), (preds == reference).mean(), path.stat().st_size / 1e6))
for name, rate, acc, agree, mb in rows:
    print(f"| {name} | {rate:.0f} | {rate / rows[0][1]:.2f}x | {acc:.4f} | {agree:.2%} | {mb:.1f} |")
