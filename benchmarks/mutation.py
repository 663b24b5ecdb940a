"""How many realistic planted bugs ("mutants") the fast test suite catches.

Each mutant replaces one exact source snippet (it must occur exactly once) in a temporary copy of
src/, tests/, configs/ and pyproject.toml; the fast suite (`pytest -x -q`, as `make test`) then runs
against that copy, the test files most likely to catch the bug first. A mutant is "killed" when a
test fails, "survived" when the suite passes, "timeout" past --timeout seconds, and "did-not-apply"
when its snippet no longer occurs exactly once (the code moved on: update the snippet).

    nice -n 10 python benchmarks/mutation.py                      # all mutants, this tree's tests
    python benchmarks/mutation.py --only T-last-weights,ST-alpha  # a few
    python benchmarks/mutation.py --tests-from /work/wt/other     # another tree's tests/ on this src/

Results: benchmarks/results/mutation.md (rewritten after every mutant, so a cut-short run keeps
what finished).
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "/work/main/.venv/bin/python"
COPIED = ["src", "configs", "benchmarks", "pyproject.toml", "README.md", "Makefile"]  # tests/ from --tests-from; test_readme reads README and Makefile, test_gpu_check runs benchmarks/gpu_check.py


class Mutant(NamedTuple):
    id: str
    file: str  # relative to src/sendit
    old: str  # must occur exactly once in the file
    new: str
    description: str
    tests: tuple[str, ...]  # test files run first (the rest of the suite follows)


M = Mutant
MUTANTS = [
    # -- the bugs the project has met or feared (issue 20) -----------------------------------------------
    M("T-last-weights", "train.py",
      "        else:\n            self.evals_since_best += 1\n",
      "        else:\n            self.evals_since_best += 1\n"
      "        self.best_state = {n: p.detach().clone() for n, p in self.model.named_parameters()\n"
      "                           if n in set(self.saved_names)}\n",
      "the trainer snapshots the weights at every validation: it keeps the last, not the best",
      ("test_methods.py", "test_resume.py")),
    M("T-patience", "train.py", "self.evals_since_best >= patience", "self.evals_since_best > patience",
      "early stopping one validation too late (patience off by one)", ("test_methods.py", "test_speed_switches.py")),
    M("D-swap-T-alpha", "distill.py", "cfg.temperature, cfg.alpha)", "cfg.alpha, cfg.temperature)",
      "the KD loss hook passes alpha as the temperature and the temperature as alpha", ("test_distill.py",)),
    M("S-best-seed", "results.py", '.groupby(shared["config_id"], sort=False).mean()',
      '.groupby(shared["config_id"], sort=False).max()',
      "a configuration is ranked by its best seed instead of its mean over seeds", ("test_study.py", "test_report.py")),
    M("ST-reseed-chunk", "stats.py",
      "    rng = np.random.default_rng(seed)\n    n = len(labels)\n    parts = []\n"
      "    for start in range(0, n_boot, chunk):  # bounded memory: chunk x n indices at a time\n",
      "    n = len(labels)\n    parts = []\n"
      "    for start in range(0, n_boot, chunk):  # bounded memory: chunk x n indices at a time\n"
      "        rng = np.random.default_rng(seed)\n",
      "the bootstrap generator is re-seeded in every chunk: chunks repeat the same resamples", ("test_stats.py",)),
    M("E-micro-f1", "evaluate.py", 'f1_score(labels, predictions, average="macro"', 'f1_score(labels, predictions, average="micro"',
      "the run's macro-F1 is computed as micro-F1 (= accuracy)", ("test_methods.py", "test_study.py")),
    M("ST-micro-f1", "stats.py", 'if metric == "accuracy":', 'if metric in ("accuracy", "f1_macro"):',
      "the bootstrap's macro-F1 is computed as micro-F1 (= accuracy)", ("test_stats.py",)),
    M("ST-ci-90", "stats.py", "[alpha / 2, 1 - alpha / 2]", "[alpha, 1 - alpha]",
      "the bootstrap interval takes alpha in each tail: a 90% interval instead of 95%", ("test_stats.py",)),
    M("S-alpha-90", "results.py", "ALPHA = 0.05", "ALPHA = 0.10",
      "the study's intervals and verdicts use alpha 0.10: 90% intervals instead of 95%", ("test_study.py", "test_report.py")),
    M("C-all-float", "config.py", "        if hint is float:\n            return number\n", "        return number\n",
      "every config number is coerced to float (batch_size 16 -> 16.0)", ("test_config.py", "test_study.py")),
    # -- training loop -------------------------------------------------------------------------------------
    M("T-clip-after-step", "train.py",
      "        if trainer.cfg.grad_clip:\n            acc.clip_grad_norm_(self.params, trainer.cfg.grad_clip)\n"
      "        if scaler:\n            scaler.step(self.optimizer)  # skipped when a gradient overflowed; the scale then shrinks\n"
      "            scaler.update()\n        else:\n            self.optimizer.step()\n",
      "        if scaler:\n            scaler.step(self.optimizer)  # skipped when a gradient overflowed; the scale then shrinks\n"
      "            scaler.update()\n        else:\n            self.optimizer.step()\n"
      "        if trainer.cfg.grad_clip:\n            acc.clip_grad_norm_(self.params, trainer.cfg.grad_clip)\n",
      "gradients are clipped after the optimizer step: clipping has no effect", ("test_methods.py",)),
    M("T-warmup-steps", "train.py", "num_warmup_steps=int(self.cfg.warmup_ratio * total)",
      "num_warmup_steps=int(self.cfg.warmup_ratio)", "warmup_ratio used as a step count: no warmup at all",
      ("test_methods.py",)),
    M("T-no-zero-grad", "train.py",
      "            self.optimizer.step()\n        self.scheduler.step()\n        self.optimizer.zero_grad(set_to_none=True)\n",
      "            self.optimizer.step()\n        self.scheduler.step()\n",
      "end-to-end training never zeroes the gradients: they accumulate over steps", ("test_methods.py",)),
    M("T-max-steps", "train.py", "min(total, cfg.max_steps)", "max(total, cfg.max_steps)",
      "max_steps raises the step count instead of capping it", ("test_methods.py", "test_speed_switches.py")),
    M("T-unseeded-order", "train.py", "self.rng = np.random.default_rng(cfg.seed)", "self.rng = np.random.default_rng()",
      "the batch order is not seeded: runs are not reproducible", ("test_resume.py", "test_speed_switches.py")),
    M("T-bf16-trainable", "train.py", "if param is not None and not param.requires_grad and param.dtype",
      "if param is not None and param.dtype", "bf16 storage also casts the trainable linear weights",
      ("test_speed_switches.py",)),
    M("T-keep-on-f1", "train.py", "row[self.score_column] > self.result.best[self.score_column]",
      'row["val_f1"] > self.result.best["val_f1"]',
      "the trainer keeps its checkpoint on macro-F1 whatever selection.metric says", ("test_trainer_behaviour.py",)),
    # -- statistics ----------------------------------------------------------------------------------------
    M("ST-mcnemar-cc", "stats.py", "(abs(b - c) - 1) ** 2", "(abs(b - c) - 0.5) ** 2",
      "McNemar's continuity correction of 0.5 instead of 1", ("test_stats.py",)),
    M("ST-exact-cutoff", "stats.py", "if b + c < EXACT_BELOW:", "if b + c <= EXACT_BELOW:",
      "the exact binomial McNemar also at 25 discordant pairs (off by one)", ("test_stats.py",)),
    M("ST-verdict-sign", "stats.py", "if only_a > only_b else", "if only_a < only_b else",
      "the verdict names the worse method as the better one", ("test_stats.py", "test_report.py")),
    M("ST-std-ddof0", "stats.py", "values.std(ddof=1)", "values.std()",
      "the std over seeds is the population std (ddof 0)", ("test_stats.py",)),
    M("ST-f1-fp-only", "stats.py", "wrong = ((p == c) != (y == c))", "wrong = ((p == c) & (y != c))",
      "the bootstrap's F1 counts false positives only, not false negatives", ("test_stats.py",)),
    # -- study ---------------------------------------------------------------------------------------------
    M("S-all-seeds", "results.py", 'shared = group[group["seed"].isin(set.intersection(*seeds) or set(group["seed"]))]',
      "shared = group",
      "configurations are ranked over all their seeds: the re-run best's extra seeds tilt the ranking",
      ("test_study.py",)),
    M("S-select-on-test", "results.py", "scores = selection_scores(results)\n", 'scores = results["test_f1_macro"]\n',
      "configurations are chosen on test macro-F1 instead of validation", ("test_study.py", "test_report.py")),
    M("S-select-on-f1", "results.py",
      'if selection_metric(results) == "f1_macro":\n        return results["best_val_f1"]', 'return results["best_val_f1"]',
      "studies select on validation macro-F1 whatever selection.metric the runs were kept by", ("test_study.py",)),
    M("S-smallest-size", "results.py", 'drop_duplicates("method", keep="last")', 'drop_duplicates("method", keep="first")',
      "each method's table row is its smallest training set instead of its largest", ("test_study.py", "test_report.py")),
    M("S-notebook-order", "results.py", 'sort_values(ascending=False, kind="stable")',
      'sort_values(ascending=True, kind="stable")',
      "the notebook files list the other runs worst first", ("test_study.py",)),
    # -- evaluation and run artifacts ----------------------------------------------------------------------
    M("E-softmax-axis", "calibration.py", "shifted / shifted.sum(axis=1, keepdims=True)", "shifted / shifted.sum(axis=0, keepdims=True)",
      "softmax normalised over the examples (axis 0) instead of the classes", ("test_predict.py", "test_methods.py")),
    M("R-val-as-test", "run.py", 'predict_logits(model, encoded["test"], cfg.train.eval_batch_size, precision,',
      'predict_logits(model, encoded["val"], cfg.train.eval_batch_size, precision,',
      "the test metrics and predictions are computed on the validation split", ("test_methods.py", "test_study.py")),
    M("R-pred-name", "artifacts.py", 'frame["pred_name"] = [label_names[i] for i in frame["pred"]]',
      'frame["pred_name"] = [label_names[i] for i in frame["label"]]',
      "predictions.csv names the gold label as the predicted one", ("test_predict.py", "test_study.py")),
    M("R-probs-swapped", "artifacts.py", 'frame[f"prob_{name}"] = probs[:, i]', 'frame[f"prob_{name}"] = probs[:, -1 - i]',
      "probability columns in reversed label order (label mapping swapped)", ("test_predict.py", "test_serve.py")),
    # -- distillation --------------------------------------------------------------------------------------
    M("D-no-T2", "distill.py", "alpha * temperature**2 * soft", "alpha * temperature * soft",
      "the soft KD term scaled by T instead of T^2", ("test_distill.py",)),
    M("D-kl-direction", "distill.py",
      "F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1)",
      "F.log_softmax(teacher / temperature, dim=-1), F.log_softmax(student / temperature, dim=-1)",
      "KL(student || teacher) instead of KL(teacher || student)", ("test_distill.py",)),
    M("D-batch-position", "distill.py", "logits_by_example[torch.as_tensor(index)]", "logits_by_example[:len(index)]",
      "each batch gets the teacher logits of the first examples, not of its own", ("test_distill.py",)),
    M("D-key-no-length", "distill.py", 'f"{type(tokenizer).__name__}|{max_length}"', 'f"{type(tokenizer).__name__}"',
      "the teacher-logit cache key ignores max_length: a stale cache after a change", ("test_distill.py",)),
    # -- methods -------------------------------------------------------------------------------------------
    M("M-bitfit-no-head", "methods/bitfit.py", 'name.endswith(".bias") or is_head(name)', 'name.endswith(".bias")',
      "BitFit trains the biases but not the head's weights", ("test_methods.py",)),
    M("M-lora-head-frozen", "methods/lora.py", "modules_to_save=head, **extra", "modules_to_save=None, **extra",
      "LoRA does not train (or save) the classification head", ("test_methods.py",)),
    M("M-lora-scaling", "methods/lora.py", "lora_alpha=options.alpha", "lora_alpha=options.r",
      "LoRA's alpha option ignored: scaling always 1", ("test_methods.py",)),
    M("M-two-phase-lr", "methods/two_phase.py", 'Phase("end_to_end", self.options.full_epochs, self.lr, name="full")',
      'Phase("end_to_end", self.options.full_epochs, self.options.head_lr, name="full")',
      "two_phase's full fine-tuning phase runs at the head's learning rate", ("test_methods.py",)),
    M("M-prompt-last-token", "methods/prompt_tuning.py", 'state["last"] = (positions * (mask != 0)).argmax(-1)',
      'state["last"] = (mask != 0).sum(-1)', "decoder prompt tuning pools one past the last real token",
      ("test_methods.py",)),
    M("M-ia3-attention-ff", "methods/ia3.py",
      '"bert": (["key", "value", r"layer\\.\\d+\\.output\\.dense"], [r"layer\\.\\d+\\.output\\.dense"]),',
      '"bert": (["key", "value", r"output\\.dense"], [r"output\\.dense"]),',
      "IA3 on BERT also rescales the attention output projection", ("test_methods.py",)),
    # -- batching and config -------------------------------------------------------------------------------
    M("B-drop-last", "batching.py", "for i in range(0, n, batch_size)]", "for i in range(0, n - batch_size, batch_size)]",
      "random batches drop the last batch (off by one in the range)", ("test_batching.py", "test_methods.py")),
    M("B-batches-unshuffled", "batching.py", "return [batches[i] for i in rng.permutation(len(batches))]", "return batches",
      "length buckets are not shuffled: training sees batches in length order", ("test_batching.py",)),
    M("B-mask-right", "batching.py", "        mask[j, span] = 1\n", "        mask[j, :len(row)] = 1\n",
      "the attention mask is right-aligned even when padding is on the left", ("test_batching.py", "test_methods.py")),
    M("B-budget-off-by-one", "batching.py", "(position - start + 1) * longest_with > max_tokens",
      "(position - start) * longest_with > max_tokens", "token-budget batches take one example too many",
      ("test_batching.py",)),
    M("C-bool-any-string", "config.py", 'return value.lower() in ("true", "1", "yes")', "return bool(value)",
      'a string "false" from an override becomes True', ("test_config.py",)),
]


class Result(NamedTuple):
    mutant: Mutant
    outcome: str  # killed | survived | timeout | did-not-apply | error
    detail: str  # the first failing test, or why it did not apply / errored
    seconds: float


def run_mutant(mutant: Mutant, tests_from: Path, timeout: float) -> Result:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.id}-") as tmp:
        tree = Path(tmp)
        for name in COPIED:
            copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
            copy(ROOT / name, tree / name)
        shutil.copytree(tests_from / "tests", tree / "tests")
        if (ROOT / "data").exists():
            (tree / "data").symlink_to((ROOT / "data").resolve())
        path = tree / "src" / "sendit" / mutant.file
        source = path.read_text()
        count = source.count(mutant.old)
        if count != 1:
            return Result(mutant, "did-not-apply", f"snippet found {count} times in src/sendit/{mutant.file}", 0.0)
        path.write_text(source.replace(mutant.old, mutant.new))
        try:
            proc = subprocess.run([PYTHON, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *test_order(tree, mutant)],
                                  cwd=tree, env={**os.environ, "PYTHONPATH": str(tree / "src")},
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Result(mutant, "timeout", f"over {timeout:.0f} s", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return Result(mutant, "survived", "", seconds)
    failed = re.search(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode in (1, 2) and failed:  # 2: interrupted, e.g. a collection error the mutant caused
        return Result(mutant, "killed", failed.group(1), seconds)
    return Result(mutant, "error", f"pytest exit {proc.returncode}: {proc.stdout[-300:]}{proc.stderr[-300:]}", seconds)


# Test files that pin a module's behaviour, run before the mutant's own list (where they exist).
PINNING_TESTS = {"train.py": ("test_trainer_behaviour.py",), "distill.py": ("test_trainer_behaviour.py",),
                 "evaluate.py": ("test_metrics.py",), "stats.py": ("test_stats.py",), "results.py": ("test_study.py",)}


def test_order(tree: Path, mutant: Mutant) -> list[str]:
    """The module's pinning tests and the mutant's test files first, then every other test file (explicit
    files keep their order; a directory argument would make pytest collect in directory order)."""
    every = sorted(str(p.relative_to(tree)) for p in (tree / "tests").glob("test_*.py"))
    wanted = dict.fromkeys(PINNING_TESTS.get(mutant.file, ()) + mutant.tests)
    first = [f"tests/{name}" for name in wanted if f"tests/{name}" in every]
    return first + [name for name in every if name not in first]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def write_report(out: Path, results: list[Result], planned: int, command: str, started: str, tests_from: Path,
                 timeout: float) -> None:
    applied = [r for r in results if r.outcome != "did-not-apply"]
    killed = [r for r in applied if r.outcome == "killed"]
    rate = f"{len(killed)}/{len(applied)} = {len(killed) / len(applied):.0%}" if applied else "n/a"
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else ""
    lines = [
        "# Mutation testing: planted bugs the fast suite catches", "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs (shared)",
        f"- Date: {started} UTC",
        f"- Command: `{command}`",
        f"- Commit measured: {git('rev-parse', '--short', 'HEAD')} ({git('log', '-1', '--format=%s')[:80]}){dirty}; "
        f"tests from {tests_from}",
        f"- Suite: `pytest -x -q -p no:cacheprovider` (the fast suite of `make test`), the likely test files first; "
        f"timeout {timeout:.0f} s per mutant",
        f"- Mutants run: {len(results)} of {planned}" + ("" if len(results) == planned else " (run cut short)"),
        f"- **Kill rate: {rate}** (killed / mutants that applied; a timeout counts as not killed)", "",
        "| id | file | bug | result | first failing test | s |", "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.mutant.id} | {r.mutant.file} | {r.mutant.description} | {r.outcome} | "
                     f"{r.detail.replace('|', '/')} | {r.seconds:.0f} |")
    for title, outcome in (("Survivors", "survived"), ("Timeouts", "timeout"), ("Did not apply", "did-not-apply"),
                           ("Errors", "error")):
        chosen = [r for r in results if r.outcome == outcome]
        if chosen:
            lines += ["", f"## {title}", ""] + [f"- {r.mutant.id} ({r.mutant.file}): {r.mutant.description}"
                                                  + (f" [{r.detail}]" if outcome != "survived" else "")
                                                  for r in chosen]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated mutant ids, run in that order")
    parser.add_argument("--tests-from", type=Path, default=ROOT, help="the tree whose tests/ to run (default: this one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mutation.md")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant (a survivor runs the whole suite)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    parser.add_argument("--list", action="store_true", help="list the mutants and whether each applies, then exit")
    args = parser.parse_args()
    mutants = MUTANTS
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {m.id for m in MUTANTS})
        if unknown:
            parser.error(f"unknown mutant id(s): {', '.join(unknown)}")
        mutants = [m for id in wanted for m in MUTANTS if m.id == id]  # in the order given
    if args.list:
        for m in mutants:
            count = (ROOT / "src" / "sendit" / m.file).read_text().count(m.old)
            print(f"{m.id:22} {m.file:28} {'ok' if count == 1 else f'snippet found {count} times'}")
        return 0
    command = "python benchmarks/mutation.py " + " ".join(sys.argv[1:])
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    results: dict[str, Result] = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_mutant, m, args.tests_from.resolve(), args.timeout) for m in mutants]
        for future in futures:
            result = future.result()
            results[result.mutant.id] = result
            print(f"{result.mutant.id:22} {result.outcome:13} {result.seconds:5.0f} s  {result.detail}", flush=True)
            write_report(args.out, list(results.values()), len(mutants), command, started, args.tests_from, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
