"""One exception type for every mistake a user can make, so the CLI can print it as one line."""


class SweepError(ValueError):
    """A user-facing problem (unknown model, bad layer, unreadable weights...).

    The message is a single line that names the problem and what is allowed instead.
    """


def one_line(text: str, limit: int = 300) -> str:
    """Collapse a (library) error message to one short line for inclusion in a SweepError."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def choices(values, limit: int = 40) -> str:
    """Render allowed values compactly: all of them when few, else the first ones and a count."""
    values = [str(v) for v in values]
    if len(values) <= limit:
        return ", ".join(values)
    return ", ".join(values[:limit]) + f", ... ({len(values)} in all)"
