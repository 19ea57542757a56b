"""A result table that prints its rows as they come (markdown) and serialises to JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 0.01:
            return f"{value:.3g}"
        return f"{value:.2e}"
    return str(value)


@dataclass
class Table:
    """``name`` (a key in results.json), a title, column keys with headers, rows, and notes."""

    name: str
    title: str
    columns: dict[str, str]  # key -> header
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    echo: bool = True

    def start(self) -> Table:
        if self.echo:
            print(f"\n## {self.title}\n", flush=True)
            for note in self.notes:
                print(f"_{note}_", flush=True)
            print(self._header(), flush=True)
        return self

    def add(self, **row: Any) -> dict[str, Any]:
        self.rows.append(row)
        if self.echo:
            print(self._line(row), flush=True)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.echo:
            print(f"_{text}_", flush=True)

    def _header(self) -> str:
        heads = list(self.columns.values())
        return "| " + " | ".join(heads) + " |\n|" + "---|" * len(heads)

    def _line(self, row: dict[str, Any]) -> str:
        return "| " + " | ".join(cell(row.get(k)) for k in self.columns) + " |"

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        parts += [f"_{n}_" for n in self.notes] + ([""] if self.notes else [])
        parts += [self._header(), *(self._line(r) for r in self.rows)]
        return "\n".join(parts) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}
