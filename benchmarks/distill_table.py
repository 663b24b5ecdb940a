#!/usr/bin/env python3
"""Write distillation results (distillation study directories: `sendit distill` or
configs/distill_minilm.yaml) as one markdown file.

Per task: the teacher, then each student method without and with KD (mean ± std over seeds), the
paired KD gain (an arm `X+kd...` minus the same arm without `+kd`, seed by seed, same data: full+kd+transfer
against its control full+transfer), parameters, size on disk, and
inference examples/s (bf16, length-sorted batches, tokenisation excluded) with the speed-up over
the teacher, re-measured by `--measure` (teacher and one run of each student, the best of two
interleaved rounds, `sendit.distill.inference_speeds`: run it on an otherwise idle machine), else as `sendit distill` measured them at the end of its run.
Adapters are measured folded into the weights, as deployed; size on disk is the saved file (for an
adapter run, the adapter and head only).

  python benchmarks/distill_table.py benchmarks/results/distill_minilm.md \
      --task "Sentiment140 (binary)" runs/distill/s140_full runs/distill/s140_lora --commands "..." \
      --task "SemEval-2017 (3 classes)" runs/distill/semeval_full runs/distill/semeval_lora
"""
import argparse
import json
import os
from pathlib import Path

import pandas as pd

from machine import cpu_model


def task_rows(directories: list[Path], measure: bool) -> tuple[list[str], dict]:
    from sendit.config import load_run
    from sendit.data import prepare
    from sendit.distill import inference_speeds

    summaries = [pd.read_csv(d / "distill_summary.csv") for d in directories]
    results = pd.concat([pd.read_csv(d / "results.csv").assign(directory=str(d)) for d in directories])
    student_runs = {}  # method label -> its first run
    for row in results.itertuples():
        student_runs.setdefault(row.method, Path(row.directory) / "runs" / row.run_id)
    kd_run = next(run for label, run in student_runs.items() if label.endswith("+kd"))
    teacher_dir = Path(load_run(kd_run / "config.yaml").distill.teacher)  # as resolved for the study
    teacher = summaries[0].iloc[0]
    speed = {}
    if measure:
        cfg = load_run(teacher_dir / "config.yaml")
        texts = prepare(cfg.data).test["text"].tolist()
        measured = inference_speeds([teacher_dir, *student_runs.values()], texts, cfg.train.eval_batch_size)
        speed = {str(run): m["inference_examples_per_s_bf16"] for run, m in measured.items()}
    teacher_speed = speed.get(str(teacher_dir), teacher["inference_examples_per_s_bf16"])
    lines = ["| model | seeds | test acc | macro-F1 | KD gain acc (paired) | KD gain F1 (paired) | params | "
             "size MB | infer ex/s (bf16) | vs teacher |", "|---|---|---|---|---|---|---|---|---|---|",
             f"| teacher: {teacher['model']} | 1 | {teacher['test_accuracy_mean']:.4f} | "
             f"{teacher['test_f1_macro_mean']:.4f} | | | {teacher['params']:,.0f} | {teacher['size_mb']:.1f} | "
             f"{teacher_speed:,.0f} | 1.00x |"]
    for summary in summaries:
        students = summary.iloc[1:]
        for _, row in students.sort_values("model", key=lambda m: m.str.contains("+kd", regex=False),
                                           kind="stable").iterrows():
            label = row["model"].split(" (")[0]
            runs = results[results["method"] == label].sort_values("seed")
            gain = {"acc": "", "f1": ""}
            control = label.replace("+kd", "", 1)  # full+kd -> full; full+kd+transfer -> full+transfer
            if control != label and (results["method"] == control).any():
                base = results[results["method"] == control].set_index("seed")
                for key, column in (("acc", "test_accuracy"), ("f1", "test_f1_macro")):
                    diff = (runs.set_index("seed")[column] - base[column]).dropna() * 100
                    gain[key] = f"{diff.mean():+.2f} ± {diff.std(ddof=1):.2f} pts"
            student_speed = speed.get(str(student_runs[label]), row["inference_examples_per_s_bf16"])
            lines.append(
                f"| {row['model']} | {', '.join(str(s) for s in runs['seed'])} | "
                f"{row['test_accuracy_mean']:.4f} ± {row['test_accuracy_std']:.4f} | "
                f"{row['test_f1_macro_mean']:.4f} ± {row['test_f1_macro_std']:.4f} | {gain['acc']} | {gain['f1']} | "
                f"{row['params']:,.0f} | {row['size_mb']:.2f} | {student_speed:,.0f} | "
                f"{student_speed / teacher_speed:.2f}x |")
    return lines, speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--task", nargs="+", action="append", required=True, metavar=("TITLE", "DIR"))
    ap.add_argument("--measure", action="store_true", help="re-measure inference speed now (idle machine)")
    ap.add_argument("--notes", default="")
    args = ap.parse_args()
    cpu = cpu_model()
    lines = ["# Distillation on minilm: a 3-layer student with and without the teacher's soft targets", "",
             f"Machine: {cpu}, {os.cpu_count()} cores.", ""]
    for title, *directories in args.task:
        rows, speed = task_rows([Path(d) for d in directories], args.measure)
        lines += [f"## {title}", "", *rows, "",
                  "Inference speed " + ("re-measured by this script (`--measure`): best of two interleaved "
                                        "rounds on the idle machine, 2 threads, test set, batch 128."
                                        if speed else "as `sendit distill` measured it at the end of its run."), ""]
    if args.notes:
        lines += [args.notes]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
