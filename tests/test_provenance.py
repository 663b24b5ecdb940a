"""Each run records what made it (versions, commit, hardware, threads) in metrics.json, to be traced and re-run."""
import json
import subprocess
from pathlib import Path

import accelerate
import peft
import torch
import transformers
from conftest import tiny_data, tiny_run

import sendit


def test_run_records_versions_commit_hardware_and_threads(tmp_path):
    run = tiny_run(tmp_path / "run", tiny_data(tmp_path))
    record = json.loads((run / "metrics.json").read_text())["provenance"]
    assert (record["sendit"], record["torch"], record["transformers"], record["peft"]) == \
        (sendit.__version__, torch.__version__, transformers.__version__, peft.__version__)
    assert record["threads"] == 1  # tiny_run trains with train.threads=1
    assert record["accelerate"] == accelerate.__version__
    assert record["gpu"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    head = subprocess.run(["git", "-C", str(Path(sendit.__file__).parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    if head:
        assert record["git_commit"].split("+")[0] == head
    else:  # a source tree outside git (an unpacked sdist, a copy): no commit to name
        assert record["git_commit"] is None
