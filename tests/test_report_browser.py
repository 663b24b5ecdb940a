"""The report in a real browser: headless Chromium opens report.html from disk, with no network.

Run with `make test-browser`, which installs the Debian packages `chromium` and `chromium-driver`.
The page marks <body> with `data-images-ok` once every image has loaded (naturalWidth > 0);
`--dump-dom` prints the DOM after the load event, so the test reads the browser's own verdict.
"""
import re
import shutil
import subprocess

import pytest
from matplotlib.image import imread

from sendit.report import write_report
from test_report import FULL_WINS, build_study

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(profile, *args) -> str:
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium: `make test-browser` installs it")
def test_report_renders_with_every_figure(tmp_path):
    directory = build_study(tmp_path, "browser", FULL_WINS, seeds=(1, 2), sizes=(1000, 4000), subset=True)
    url = write_report(directory).resolve().as_uri()
    figures = len(list((directory / "figures").glob("*.png")))

    dom = chromium(tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", url)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert "<title>sendit report: browser</title>" in dom and "<h1>sendit report: browser</h1>" in dom
    assert f'data-images="{figures}"' in body and 'data-images-ok="true"' in body, body

    shot = tmp_path / "report.png"
    chromium(tmp_path / "profile", "--window-size=1280,2000", f"--screenshot={shot}", url)
    image = imread(shot)
    assert image.shape[:2] == (2000, 1280) and image.std() > 0.05  # a page, not a blank canvas
