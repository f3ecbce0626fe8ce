"""The atlas's pages as text: templates with autoescape, links and file names that stay in the site.

Pure functions of the rows they are given: no file is read or written here. Everything shown comes
from a results root, which is untrusted: values are text in a page (jinja2 autoescape), never
markup; file names are slugs; links are percent-encoded relative paths.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from importlib import resources
from urllib.parse import quote

import jinja2

_PLAIN = re.compile(r"[A-Za-z0-9_]{1,64}")


def slug(name) -> str:
    """A file name for a name read from the results root.

    Plain names (letters, digits, underscore) are kept; anything else is reduced to those characters
    plus a hash of the original, so a slug is never `..`, never holds a separator, a colon or NUL, and
    two names never share one (plain names have no '-', hashed ones do).
    """
    text = str(name)
    if _PLAIN.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_]+', '_', text).strip('_')[:40] or 'x'}-{digest}"


def href(*segments) -> str:
    """A relative link with every path segment percent-encoded."""
    return "/".join(quote(str(s), safe="") for s in segments)


def templates() -> jinja2.Environment:
    """Autoescaping everywhere: a value from the results root is text in a page, never markup."""
    return jinja2.Environment(loader=jinja2.PackageLoader("sweep.views", "templates/atlas"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def templates_digest() -> str:
    """Changes whenever a template changes, so a site built with older pages is rebuilt."""
    h = hashlib.sha256()
    folder = resources.files("sweep.views") / "templates" / "atlas"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        h.update(item.name.encode() + b"\0" + item.read_bytes())
    return h.hexdigest()[:16]


def render(env: jinja2.Environment, template: str, depth: int, **context) -> bytes:
    return env.get_template(template).render(up="../" * depth, **context).encode()


def text(v) -> str:
    """A cell as text: missing values are empty."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def fmt(v, spec: str = ".5g") -> str:
    """A metric as text: numbers formatted, lists as JSON, missing values empty."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, spec)
    return json.dumps(v) if isinstance(v, (list, dict)) else text(v)


def number(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def curve(steps, values, name: str, width: int = 420, height: int = 180) -> dict | None:
    """An SVG line chart with axes: x the iteration, y the value, ticks at the ends; built from finite
    floats only (anything else in the row is dropped)."""
    pts = []
    for s, v in zip(steps if steps is not None else [], values if values is not None else []):
        s, v = number(s), number(v)
        if s is not None and v is not None:
            pts.append((s, v))
    if not pts:
        return None
    left, right, top, bottom = 64, 12, 10, 34
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    first, last = min(s for s, _ in pts), max(s for s, _ in pts)
    span, length = (hi - lo) or 1.0, (last - first) or 1.0

    def x(s):
        return left + (width - left - right) * (s - first) / length

    def y(v):
        return height - bottom - (height - top - bottom) * (v - lo) / span

    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in pts)
    return {"name": name, "width": width, "height": height, "points": points,
            "x0": left, "x1": width - right, "y0": height - bottom, "y1": top,
            "x_lo": f"{first:g}", "x_hi": f"{last:g}", "y_lo": f"{lo:.4g}", "y_hi": f"{hi:.4g}",
            "start": f"{pts[0][1]:.4g}", "end": f"{pts[-1][1]:.4g}", "steps": f"{last:g}"}


def script_data(name: str, key: str, value) -> bytes:
    """A static .js file that stores `value` under window[name][key]: pages load it with a script tag,
    which works from a bucket, a web server and file:// alike (fetch() of a local file does not).

    The value is JSON with every '<', '>', '&' and line separator escaped, so no string from the results
    root can end the script or become markup; the pages insert it as text, never as HTML.
    """
    body = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    body = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    target = json.dumps(str(name), ensure_ascii=True)
    return (f"(window[{target}]=window[{target}]||{{}})[{json.dumps(str(key), ensure_ascii=True)}]={body};\n"
            ).encode()
