"""Tables for the paper: LaTeX (booktabs) and one self-contained HTML page."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import TINY_RECIPE, run_command
from PIL import Image

from sagan_cli.ablate.paper import decimals_for, latex_escape, mean_interval


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A finished 2-point x 2-seed grid of the tiny recipe (about 20 s on 2 cores)."""
    root = tmp_path_factory.mktemp("paper")
    (root / "tiny.toml").write_text(TINY_RECIPE)
    command = [sys.executable, "-m", "sagan_cli", "ablate", str(root / "tiny.toml")]
    command += ["--vary", "attention_layer=[],[16]", "--seeds", "2", "--name", "e"]
    # TensorBoard on: runs keep G's newest attention figure, which the HTML page shows
    command += ["--results", str(root), "--device", "cpu", "-q", "--tensorboard"]
    done = run_command(command)
    assert done.returncode == 0, done.stderr
    return root


def report(root, *options):
    command = [sys.executable, "-m", "sagan_cli", "report", "e", "--results", str(root)]
    result = run_command([*command, *options])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_numbers_are_rounded_to_what_their_spread_supports():
    assert decimals_for(0.2345, 41.23456) == 2  # 41.23 ± 0.23
    assert decimals_for(3.4, 41.2) == 1  # 41.2 ± 3.4
    assert decimals_for(12.0, 141.0) == 0  # 141 ± 12
    assert decimals_for(0.00003, 0.0039) == 6  # capped
    assert decimals_for(None, 41.23456) == 1  # three significant digits without a spread
    low, high = mean_interval(np.array([1.0, 2.0, 3.0]), "welch")
    assert (low + high) / 2 == pytest.approx(2.0) and high - low == pytest.approx(
        2 * 2.4842, rel=1e-3
    )
    assert latex_escape("model.attention_layer [16] 50% a&b") == (
        r"model.attention\_layer {[}16{]} 50\% a\&b"
    )


@pytest.mark.slow
def test_the_latex_table_is_booktabs_with_the_best_in_bold_and_verdict_marks(experiment):
    text = report(
        experiment, "--format", "latex", "--caption", "Attention layers", "--label", "tab:att"
    )
    lines = text.splitlines()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert lines.count(rule) == 1
    assert r"\caption{Attention layers}" in text and r"\label{tab:att}" in text
    head = lines[lines.index(r"\toprule") + 1]
    assert head.startswith(r"attention\_layer &") and r"Structure $\downarrow$" in head
    body = lines[lines.index(r"\midrule") + 1 : lines.index(r"\bottomrule")]
    assert [row.split(" & ")[0] for row in body] == ["{[}{]}", "{[}16{]}"]
    # every row has as many cells as the head; the structure column: mean ± std, one bold
    width = head.count("&")
    assert all(row.count("&") == width and row.endswith(r"\\") for row in body)
    structure = [row.split(" & ")[1] for row in body]
    assert sum(cell.startswith(r"{\boldmath") for cell in structure) == 1
    assert all(re.search(r"\$-?[0-9.]+ \\pm [0-9.]+\$", cell) for cell in structure)
    # the non-baseline row carries its verdict mark, explained under the table
    assert re.search(r"\$\^\{(\+|-|\\circ)\}\$", structure[1]) and "Holm" in text
    interval = report(experiment, "--format", "latex", "--ci", "welch")
    assert r"\pm" not in interval.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert re.search(r"\\;\[[-0-9.]+, [-0-9.]+\]\$", interval)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_the_latex_table_compiles(experiment, tmp_path):
    table = report(experiment, "--format", "latex", "--caption", "A & B_1 50%")
    document = tmp_path / "t.tex"
    document.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
        + table
        + "\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


@pytest.mark.slow
def test_the_html_page_holds_everything_and_renders_in_a_browser(experiment, tmp_path):
    page = report(experiment, "--format", "html")
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert 'src="http' not in page and 'href="http' not in page  # self-contained
    plots = sorted(p.name for p in (experiment / "e").glob("*.png"))
    assert plots and page.count("data:image/png;base64,") >= len(plots)
    assert 'class="best"' in page
    # G's attention figure of the grid point with attention (the other has no attention maps)
    assert "attention (G" in page and page.count("<h3>attention_layer=") == 1
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium here (tests/install_testbed.sh installs it as root)")
    (tmp_path / "page.html").write_text(page)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1100,1400", f"--screenshot={shot}", (tmp_path / "page.html").as_uri()],
        capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    image = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    top = image[:200]  # the title and the table: dark text on white
    assert (top.sum(axis=2) < 200).mean() > 0.005 and (top.sum(axis=2) > 740).mean() > 0.5
    # the plots below were decoded and drawn: coloured pixels (matplotlib's blue lines)
    rest = image[200:]
    coloured = (rest.max(axis=2) - rest.min(axis=2)) > 60
    assert coloured.mean() > 0.001
