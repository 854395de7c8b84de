"""An ablation's table as it goes into a paper: LaTeX (booktabs) and one self-contained HTML page.

Numbers are rounded to the precision their spread supports (the spread to two
significant digits, the mean to the same decimal place), the best mean of each
metric is bold by the metric's direction (``sagan_cli.metrics``), and each row's
verdict against the baseline is a marker explained under the table. With
``interval`` the cell shows the 95% interval of the row's mean (Welch: a t
interval; bootstrap: percentile, scipy) instead of the standard deviation.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from sagan_cli.ablate.summary import present_metrics
from sagan_cli.metrics import metric
from sagan_cli.outcomes import RunStatus

if TYPE_CHECKING:
    from sagan_cli.ablate.service import Report

MARKS = {"better": "+", "worse": "-", "inconclusive": r"\circ"}
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "[": "{[}",  # never read as the optional argument of \\ or \midrule
    "]": "{]}",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def decimals_for(spread: float | None, value: float) -> int:
    """Decimal places a number deserves: two significant digits of its spread (three of the
    value itself when there is no spread), between 0 and 6."""
    basis, digits = (spread, 2) if spread and math.isfinite(spread) and spread > 0 else (value, 3)
    if not basis or not math.isfinite(basis):
        return 2
    return max(0, min(6, digits - 1 - math.floor(math.log10(abs(basis)))))


def _values(report: Report, row: pd.Series, name: str) -> np.ndarray:
    """The finished runs' values of ``name`` in ``row``'s group."""
    runs = report.runs
    mask = runs["status"] == str(RunStatus.DONE)
    for key in report.keys:
        mask &= runs[key].fillna("").astype(str) == str(row[key])
    if name not in runs:
        return np.array([])
    values = pd.to_numeric(runs.loc[mask, name], errors="coerce").dropna()
    return values.to_numpy(dtype=float)


def mean_interval(values: np.ndarray, ci: str, seed: int = 0) -> tuple[float, float] | None:
    """The 95% interval of the mean of ``values`` (None below 2 values)."""
    if len(values) < 2:
        return None
    if ci == "bootstrap":
        found = stats.bootstrap(
            (values,), np.mean, confidence_level=0.95, method="percentile",
            random_state=np.random.default_rng(seed),
        )  # fmt: skip
        return float(found.confidence_interval.low), float(found.confidence_interval.high)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


class Cell:
    """One metric of one row: its mean, its spread as shown, bold or not, its verdict."""

    def __init__(self, report: Report, row: pd.Series, name: str, interval: str | None) -> None:
        self.mean = row[f"{name}_mean"]
        self.std = row[f"{name}_std"]
        self.n = int(row[f"{name}_n"])
        self.bounds = (
            mean_interval(_values(report, row, name), interval) if interval and self.n else None
        )
        verdict = row.get(f"{name}_verdict")
        self.verdict = None if row.get("baseline") or pd.isna(verdict) else str(verdict)
        self.best = False

    @property
    def empty(self) -> bool:
        return self.n == 0 or pd.isna(self.mean)

    def numbers(self) -> tuple[str, str | None]:
        """The mean and the spread (``± s`` or ``[lo, hi]``) as rounded text."""
        spread = None if pd.isna(self.std) else float(self.std)
        places = decimals_for(spread, float(self.mean))
        mean = f"{self.mean:.{places}f}"
        if self.bounds is not None:
            low, high = self.bounds
            return mean, f"[{low:.{places}f}, {high:.{places}f}]"
        return mean, None if spread is None else f"{spread:.{places}f}"


def table_cells(report: Report, interval: str | None) -> tuple[list[str], list[list[Cell]]]:
    """The metrics shown and a cell per row and metric, the best of each metric marked."""
    names = present_metrics(report.table)
    rows = [[Cell(report, row, n, interval) for n in names] for _, row in report.table.iterrows()]
    for column, name in enumerate(names):
        lower = metric(name).lower_is_better
        filled = [r[column] for r in rows if not r[column].empty]
        if lower is None or len(filled) < 2:
            continue
        best = (min if lower else max)(float(c.mean) for c in filled)
        for cell in filled:
            cell.best = math.isclose(float(cell.mean), best, rel_tol=1e-12, abs_tol=0.0)
    return names, rows


def _heading(name: str) -> str:
    row = metric(name)
    arrow = {True: r" $\downarrow$", False: r" $\uparrow$", None: ""}[row.lower_is_better]
    return row.heading + arrow


def to_latex(
    report: Report,
    caption: str | None = None,
    label: str | None = None,
    interval: str | None = None,
) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    names, rows = table_cells(report, interval)
    keys = report.keys
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + latex_escape(caption or f"Ablation {report.name}") + "}",
        r"\label{" + (label or f"tab:{report.name}").replace("}", "") + "}",
        r"\begin{tabular}{" + "l" * len(keys) + "r" * len(names) + "}",
        r"\toprule",
        " & ".join([*(latex_escape(k) for k in keys), *(_heading(n) for n in names)]) + r" \\",
        r"\midrule",
    ]
    used: set[str] = set()
    for (_, row), cells in zip(report.table.iterrows(), rows, strict=True):
        out = [latex_escape(row[k]) for k in keys]
        for cell in cells:
            if cell.empty:
                out.append("--")
                continue
            mean, spread = cell.numbers()
            if spread is None:
                text = f"${mean}$"
            elif cell.bounds is not None:
                text = f"${mean}\\;{spread}$"
            else:
                text = f"${mean} \\pm {spread}$"
            if cell.best:  # \boldmath: bold digits inside math, with plain LaTeX
                text = r"{\boldmath " + text + "}"
            if cell.verdict in MARKS:
                used.add(cell.verdict)
                text += f"$^{{{MARKS[cell.verdict]}}}$"
            out.append(text)
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    spread_text = (
        f"mean [95\\% interval of the mean, {'percentile bootstrap' if interval == 'bootstrap' else 't'}]"
        if interval
        else r"mean $\pm$ sample standard deviation"
    )
    notes = [f"Cells: {spread_text} over seeds; bold: the best mean of each metric."]
    if used:
        alpha = report.options.alpha
        marks = "; ".join(
            f"$^{{{MARKS[v]}}}$ {v}" for v in ("better", "worse", "inconclusive") if v in used
        )
        notes.append(
            f"Against the baseline row ({marks}): two-sided t test, Holm-corrected over the "
            f"rows, $\\alpha = {alpha:g}$."
        )
    lines += [r"\par\smallskip\footnotesize " + " ".join(notes), r"\end{table}", ""]
    return "\n".join(lines)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def to_html(reports: list[Report], folders: dict[str, Path], interval: str | None = None) -> str:
    """One page holding every table, plot and attention figure (images inline: it can be
    mailed or attached as it is)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>" + html.escape(", ".join(r.name for r in reports)) + "</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse;margin:1em 0}"
        "th,td{padding:.3em .8em;text-align:right}th:first-child,td:first-child{text-align:left}"
        "thead{border-top:2px solid #000;border-bottom:1px solid #000}"
        "tbody{border-bottom:2px solid #000}.best{font-weight:bold}"
        "img{max-width:100%;margin:.5em 0;display:block}.note{color:#444;font-size:.9em}"
        "</style></head><body>",
    ]
    for report in reports:
        names, rows = table_cells(report, interval)
        parts.append(f"<h1>{html.escape(report.name)}</h1>")
        head = [*(html.escape(k) for k in report.keys), *(_html_heading(n) for n in names)]
        parts.append(
            "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
        )
        for (_, row), cells in zip(report.table.iterrows(), rows, strict=True):
            out = [f"<td>{html.escape(str(row[k]))}</td>" for k in report.keys]
            for cell in cells:
                if cell.empty:
                    out.append("<td>–</td>")
                    continue
                mean, spread = cell.numbers()
                text = (
                    mean
                    if spread is None
                    else (f"{mean} {spread}" if cell.bounds is not None else f"{mean} ± {spread}")
                )
                mark = f"<sup>{cell.verdict}</sup>" if cell.verdict else ""
                style = ' class="best"' if cell.best else ""
                out.append(f"<td{style}>{html.escape(text)}{mark}</td>")
            parts.append("<tr>" + "".join(out) + "</tr>")
        parts.append("</tbody></table>")
        parts.append(
            '<p class="note">Mean ± sample std over seeds (or the 95% interval of the mean); '
            "bold: the best mean of each metric; superscripts: the verdict against the "
            f"baseline row (t test, Holm-corrected, α = {report.options.alpha:g}).</p>"
        )
        folder = folders.get(report.name)
        if folder is None:
            continue
        for plot in sorted(folder.glob("*.png")):
            parts.append(f"<h2>{html.escape(plot.stem.replace('_', ' '))}</h2>{_image(plot)}")
        figures = _attention_figures(report, folder)
        if figures:
            parts.append("<h2>attention (G, newest figure of each grid point's first seed)</h2>")
            parts += [f"<h3>{html.escape(label)}</h3>{_image(path)}" for label, path in figures]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_heading(name: str) -> str:
    row = metric(name)
    arrow = {True: " ↓", False: " ↑", None: ""}[row.lower_is_better]
    return html.escape(row.name + arrow)


def _attention_figures(report: Report, folder: Path) -> list[tuple[str, Path]]:
    """(grid point, figure) for each grid point whose first run saved an attention figure."""
    from sagan_cli.results import RunDir

    found = []
    for _, group in report.runs.groupby(report.keys, sort=False):
        first: Any = group.iloc[0]
        path = RunDir(folder / "runs" / str(first.run_id)).attention_figure
        if path.is_file():
            found.append((", ".join(f"{k}={first[k]}" for k in report.keys), path))
    return found
