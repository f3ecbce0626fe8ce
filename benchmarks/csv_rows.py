"""Appending result rows to a benchmark's CSV, the one way every script here does it."""

from __future__ import annotations

import csv
import os


def append_rows(path: str, rows: list[dict], fields: list[str] | None = None) -> None:
    """Append `rows` to the CSV at `path`, with a header of `fields` (default: the first row's keys)
    written only when the file is new, so runs of one script accumulate in one table."""
    if not rows and fields is None:
        return  # no rows and no header to write
    new = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields or list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
