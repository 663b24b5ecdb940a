"""benchmarks/seed_section.py: the interval behind seeds.md's verdicts holds the seeds' chance and the test
sample's, worked out by hand."""
import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "seed_section.py"
spec = importlib.util.spec_from_file_location("seed_section", SCRIPT)
seed_section = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_section)

T_975_2DF = 4.302653  # Student's t, 97.5th percentile, 2 degrees of freedom


def summary_row(method: str, n_seeds: int, std: float | None) -> dict:
    return {"method": method, "config_id": f"{method}-lr0.001", "seeds": " ".join(map(str, range(n_seeds))),
            "n_seeds": n_seeds, "test_accuracy_mean": 0.80, "test_accuracy_std": std, "test_accuracy_ci_low": 0.78,
            "test_accuracy_ci_high": 0.82, "test_f1_macro_mean": 0.79, "runtime_sec_mean": 10.0,
            "peak_memory_mb_mean": 100.0}


def test_interval_adds_the_seeds_half_width_to_the_test_samples_in_quadrature():
    seed_half = T_975_2DF * 0.03 / math.sqrt(3)  # 0.0745
    half = math.sqrt(0.02 ** 2 + seed_half ** 2)  # 0.0772
    low, high = seed_section.interval(pd.Series(summary_row("lora", 3, 0.03)), "test_accuracy")
    assert (low, high) == pytest.approx((0.80 - half, 0.80 + half), abs=1e-5)
    assert seed_section.interval(pd.Series(summary_row("lora", 1, None)), "test_accuracy") == (0.78, 0.82)
    assert seed_section.interval(pd.Series(summary_row("lora", 2, 0.5)), "test_accuracy") == (0.0, 1.0)  # clipped


def test_section_judges_the_seed_by_the_wider_interval(tmp_path):
    pd.DataFrame([summary_row("lora", 3, 0.03), summary_row("full", 1, None)]).to_csv(tmp_path / "summary.csv",
                                                                                     index=False)
    lines = seed_section.section(tmp_path, "test_accuracy", {"lora": 0.87, "full": 0.87})
    lora, full = (next(line for line in lines if line.startswith(f"| {m} |")) for m in ("lora", "full"))
    # 0.87 lies outside the test sample's [78, 82] but inside [72.3, 87.7]: no significant difference.
    assert "| [78.0, 82.0] | [72.3, 87.7] |" in lora and "no significant difference (-7.0 points" in lora
    assert "| (one seed) |" in full and "worse by 7.0 points" in full and "test sample only: one seed" in full
