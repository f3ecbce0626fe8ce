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


#: Exception class names (anywhere in the chain) -> what they mean, in words. Names, not imports:
#: botocore and aiohttp are optional, and this module must stay importable without them.
_STORAGE_WORDS = (
    ("NoSuchBucket", "no such bucket"),
    ("NoSuchKey", "no such object"),
    ("AccessDenied", "access denied (check the credentials and the bucket policy)"),
    ("NoCredentialsError", "no credentials found (set them in storage_options or the environment)"),
    ("EndpointConnectionError", "cannot connect to the storage endpoint"),
    ("ClientConnectorError", "cannot connect to the storage endpoint"),
    ("ConnectionRefusedError", "cannot connect to the storage endpoint"),
    ("IsADirectoryError", "it is a folder, not a file"),
    ("PermissionError", "access denied"),
)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def storage_error(exc: BaseException, address: str) -> str:
    """One line saying in words why `address` (a path or URL) could not be read, e.g.
    "cannot read s3://bucket/key: no such object", instead of a bare FileNotFoundError('bucket/key')."""
    return f"cannot read {address}: {storage_reason(exc, address)}"


def storage_reason(exc: BaseException, address: str) -> str:
    """The words of `storage_error` alone ("no such object"), for messages that name the address
    their own way."""
    chain = list(_chain(exc))
    names = {type(e).__name__ for e in chain} | {_error_code(e) for e in chain}
    for name, words in _STORAGE_WORDS:
        if name in names:
            return words
    if any(isinstance(e, FileNotFoundError) for e in chain):
        if any("bucket does not exist" in str(e) for e in chain):
            return "no such bucket"
        return f"no such {'file' if _is_local(address) else 'object'}"
    return one_line(exc, 200)


def _error_code(exc: BaseException) -> str:
    """botocore's ClientError carries the service's code (NoSuchKey, AccessDenied...) in its response."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _is_local(address: str) -> bool:
    return "://" not in address or address.startswith("file://")
