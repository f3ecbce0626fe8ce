"""Object boxes as annotations give them: checked once, where they are read and again where they mask."""

from __future__ import annotations

import numpy as np

BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def box_problem(box, width: int | None = None, height: int | None = None) -> str | None:
    """What is wrong with a box [xmin, ymin, xmax, ymax], in words naming the bad value; None if
    nothing. Checked before masking, because int() of NaN raises mid-pipeline and a negative or
    reversed edge would silently mask the wrong pixels (Python slicing counts from the end).
    With the image's size, a box must also lie within it (max edges are exclusive: xmax <= width)."""
    if len(box) != 4:
        return f"box {list(box)} has {len(box)} coordinates, expected 4 ({', '.join(BOX_FIELDS)})"
    for name, value in zip(BOX_FIELDS, box):
        if value is None:
            return f"{name} is missing"
        try:
            number = float(value)
        except (TypeError, ValueError):
            return f"{name} {value!r} is not a number"
        if not np.isfinite(number):
            return f"{name} {number} is not finite"
        if number < 0:
            return f"{name} {number:g} is negative"
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    if xmin >= xmax:
        return f"xmin {xmin:g} >= xmax {xmax:g}"
    if ymin >= ymax:
        return f"ymin {ymin:g} >= ymax {ymax:g}"
    if width is not None and xmax > width:
        return f"xmax {xmax:g} is outside the image (width {width})"
    if height is not None and ymax > height:
        return f"ymax {ymax:g} is outside the image (height {height})"
    return None
