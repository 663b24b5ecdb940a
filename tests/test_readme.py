"""Every command in the README's ```bash blocks runs as written (issue 19: a copied command failed).

Each command is checked one of these ways, listed in CHECKS, which must name every README command:
- "run": as written, in a scratch folder whose SENDIT_DATA holds small files of the datasets it reads
  (the real minilm model, a few dozen examples: seconds, no network);
- "dry-run" (`--dry-run` appended): a study of many runs, or `make demo`, would take too long;
- "help" (`--help` appended): `sendit data download` needs a network;
- "ci": `make test` is what CI runs this test from.
The commands run in README order: eval and predict use the run the train command before them makes.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import synthetic_frame

from sendit.data.sources import SENTIMENT140_DEFAULT, SENTIMENT140_FULL

REPO = Path(__file__).resolve().parents[1]

CHECKS = {
    "make demo": "dry-run",
    "make test": "ci",
    "sendit study configs/quickstart.yaml --set train.epochs=2 --set model.max_length=48": "dry-run",
    "sendit study configs/quickstart.yaml --dry-run": "run",
    "sendit train --dataset sentiment140 --model minilm --method lora --lr 5e-4 --epochs 1 --out runs/lora": "run",
    "sendit eval runs/lora": "run",
    'sendit predict runs/lora "ugh my flight got cancelled" "best concert ever"': "run",
    'echo "what a day" | sendit predict runs/lora - -o jsonl': "run",
    "sendit predict runs/lora --file tweets.csv --text-column text -o csv": "run",
    "sendit methods --model minilm": "run",
    "sendit data info sentiment140": "run",
    "sendit data prepare sentiment140 --path sentiment140/train_full1600k_label_text --sample 50000 "
    "--split 80/10/10": "run",
    "sendit data download sentiment140": "help",
    "sendit study configs/imdb_sizes.yaml -s name=imdb_length256_attn0 -s 'sizes=[5000]' "
    "-s 'methods=[{name: lora, lr: 5.0e-4}]' -s train.threads=1": "dry-run",
    "sendit train --dataset sst2 --model minilm --method full --lr 5e-5 --epochs 1 --max-length 64 --seed 42 "
    "--out runs/datasets/sst2_full --set train.threads=1": "run",
    "sendit study configs/target_twitter.yaml --workers 2": "dry-run",
    "sendit train --dataset semeval2017 --model minilm --method full --lr 5e-5 --epochs 1 --seed 42 "
    "--out runs/distill/teacher_semeval --set train.threads=1": "run",
}


def readme_commands() -> list[str]:
    """The README's bash-block commands in order: continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for command in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.sub(r"\s+#.*$", "", command).split())
            if command:
                commands.append(command)
    return commands


def test_every_readme_command_has_a_check():
    assert readme_commands() == list(CHECKS)


def write_small_datasets(root: Path) -> None:
    """Small files where the README's commands look for sentiment140, sst2 and semeval2017."""
    from sendit.data.datasets import SEMEVAL_FILES

    tweets = synthetic_frame(120)
    sample = root / SENTIMENT140_DEFAULT
    sample.parent.mkdir(parents=True)
    sample.write_text("".join(f'{4 * y},{i},date,NO_QUERY,user,"{t}"\n' for i, (t, y) in
                              enumerate(zip(tweets.text, tweets.label))))
    full = root / SENTIMENT140_FULL / "1.csv"  # enough for --sample 50000
    full.parent.mkdir(parents=True)
    full.write_text("".join(f"{i % 2},tweet number {i} {'good' if i % 2 else 'bad'}\n" for i in range(50_200)))
    (root / "sst2").mkdir()
    for name, frame in (("train.tsv", tweets[:80]), ("dev.tsv", tweets[80:])):
        (root / "sst2" / name).write_text("sentence\tlabel\n" + "".join(
            f"{t}\t{y}\n" for t, y in zip(frame.text, frame.label)))
    polarity = {0: "negative", 1: "positive"}
    for index, name in enumerate(SEMEVAL_FILES):
        path = root / "semeval2017_task4a" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        part = synthetic_frame(30, seed=index)
        path.write_text("".join(f"{index}{i}\t{polarity[y]}\t{t} f{index}\n"
                                for i, (t, y) in enumerate(zip(part.text, part.label))))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder to run the README from: configs/, tweets.csv and small data (SENDIT_DATA)."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "configs").symlink_to(REPO / "configs")
    synthetic_frame(5).to_csv(folder / "tweets.csv", index=False)
    write_small_datasets(folder / "data")
    return folder


@pytest.mark.parametrize("command", list(CHECKS))
def test_readme_command_runs(scratch, command):
    check = CHECKS[command]
    if check == "ci":
        pytest.skip("CI runs this test from `make test`")
    line = {"run": command, "dry-run": f"{command} --dry-run" if command.startswith("sendit") else
            command.replace("make ", "make -n ", 1), "help": f"{command} --help"}[check]
    env = {**os.environ, "SENDIT_DATA": str(scratch / "data"), "PYTHONPATH": str(REPO / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cwd = REPO if line.startswith("make") else scratch
    done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
