"""Benchmark files: CSV and Markdown under ``results/bench/``, never replacing older ones."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from sagan_cli import markdown
from sagan_cli.errors import ResultsError
from sagan_cli.fileio import atomic_write_text, fresh_path


def write_results(
    out_dir: Path, kind: str, device: str, precision: str, frame: pd.DataFrame, text: str
) -> tuple[Path, Path]:
    """``<kind>-<device>-<precision>-<time>.csv`` and ``.md``, never replacing older files."""
    check_output_folder(out_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    csv_path = fresh_path(out_dir / f"{kind}-{device}-{precision}-{stamp}.csv")
    md_path = csv_path.with_suffix(".md")
    atomic_write_text(csv_path, frame.to_csv(index=False))
    atomic_write_text(md_path, text)
    return csv_path, md_path


def check_output_folder(out_dir: Path) -> None:
    """Before a benchmark runs: ``--out`` must be a folder (or not exist yet)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ResultsError(
            f"--out {out_dir} is a file; benchmarks write a CSV and a Markdown file into a "
            f"folder. Give a folder (it is created if missing)."
        )


def frame_markdown(frame: pd.DataFrame, fmt: str) -> str:
    rows = [
        [str(index), *("–" if pd.isna(v) else fmt.format(v) for v in row)]
        for index, row in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]
    return markdown.table(["size", *map(str, frame.columns)], rows, numeric=True)


def rows_markdown(title: str, rows: list[dict[str, object]]) -> str:
    """A plain Markdown table of result rows (keys as columns)."""
    columns = list(rows[0])
    body = markdown.table(columns, [[_fmt(row[c]) for c in columns] for row in rows])
    return f"# {title}\n\n{body}\n"


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
