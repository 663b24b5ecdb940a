"""benchmarks/seed_section.py: seeds.md's verdicts are judged on the interval over seeds and test sample
(summary.csv's, `sendit.stats.with_seeds`, tested by hand in test_stats)."""
import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "seed_section.py"
spec = importlib.util.spec_from_file_location("seed_section", SCRIPT)
seed_section = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_section)


def summary_row(method: str, n_seeds: int, std: float | None, seeds_interval: tuple[float, float]) -> dict:
    return {"method": method, "config_id": f"{method}-lr0.001", "seeds": " ".join(map(str, range(n_seeds))),
            "n_seeds": n_seeds, "test_accuracy_mean": 0.80, "test_accuracy_std": std, "test_accuracy_ci_low": 0.78,
            "test_accuracy_ci_high": 0.82, "test_accuracy_ci_seeds_low": seeds_interval[0],
            "test_accuracy_ci_seeds_high": seeds_interval[1], "test_f1_macro_mean": 0.79, "runtime_sec_mean": 10.0,
            "peak_memory_mb_mean": 100.0}


def test_section_judges_the_seed_by_the_wider_interval(tmp_path):
    pd.DataFrame([summary_row("lora", 3, 0.03, (0.723, 0.877)),
                  summary_row("full", 1, None, (0.78, 0.82))]).to_csv(tmp_path / "summary.csv", index=False)
    lines = seed_section.section(tmp_path, "test_accuracy", {"lora": 0.87, "full": 0.87})
    lora, full = (next(line for line in lines if line.startswith(f"| {m} |")) for m in ("lora", "full"))
    # 0.87 lies outside the test sample's [78, 82] but inside [72.3, 87.7]: no significant difference.
    assert "| [78.0, 82.0] | [72.3, 87.7] |" in lora and "no significant difference (-7.0 points" in lora
    assert "| (one seed) |" in full and "worse by 7.0 points" in full and "test sample only: one seed" in full
