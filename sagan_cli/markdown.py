"""Markdown tables for the files sagan writes (benchmarks, ablation summaries)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: bool = False) -> str:
    """A pipe table; ``numeric`` right-aligns every column."""
    rule = "---:" if numeric else "---"
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule for _ in header) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)
