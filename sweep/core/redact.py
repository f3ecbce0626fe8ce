"""Credentials never leave the process: mask them in everything written (manifests, logs, rows).

Two nets, because either alone misses cases:
- by name: a mapping entry whose key looks like a credential (`key`, `secret`, `token`,
  `aws_session_token`, `password`, `api_key`, `credentials`, ...) is replaced by MASK, whatever its value;
- by value: a known secret quoted inside any string (an error message, a log line, a URL) is replaced
  by MASK. Known secrets are the strings found under credential-like keys (of storage options, or of
  the object being redacted) and the values of credential-like environment variables.
URL userinfo (`s3://KEY:SECRET@bucket`) and credential-like query parameters (presigned URLs) are masked
as well. Hashes computed before redaction (config_hash) are one-way and left alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

#: Shorter values are masked by name but never searched for inside other strings: real credentials are
#: long (AWS: 20 and 40 characters), while short ones ("test", "true") would corrupt ordinary text and paths.
MIN_SECRET_LEN = 6

#: Words that make a key name credential-like (names are split at `_`, `-`, `.`, spaces and camelCase).
CREDENTIAL_WORDS = frozenset({
    "key", "secret", "secrets", "token", "password", "passwd", "pwd", "passphrase", "credential",
    "credentials", "auth", "authorization", "signature", "sig", "cookie", "apikey", "sas",
})

#: Words that make an environment variable's value a known secret (PWD is the working directory).
ENV_CREDENTIAL_WORDS = frozenset({"KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL",
                                  "CREDENTIALS", "APIKEY"})

_NOT_SECRETS = frozenset({"true", "false", "none", "null"})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#\s'\"]+)=(?P<value>[^&;#\s'\"]+)")


def is_credential_name(name: Any) -> bool:
    """Whether a mapping key names a credential (case-insensitive, by word; every `aws_*` key)."""
    if not isinstance(name, str):
        return False
    words = {w.lower() for w in _WORD_SPLIT.split(name) if w}
    return bool(words & CREDENTIAL_WORDS) or name.lower().startswith("aws_")


def _is_env_credential(name: str) -> bool:
    return bool(set(name.upper().split("_")) & ENV_CREDENTIAL_WORDS)


def _usable(value: str) -> bool:
    return len(value) >= MIN_SECRET_LEN and value.strip().lower() not in _NOT_SECRETS


def secret_values(obj: Any, under_credential: bool = False) -> set[str]:
    """The strings stored under credential-like keys anywhere in `obj` (long enough to search for)."""
    found: set[str] = set()
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            found |= secret_values(v, under_credential or is_credential_name(k))
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            found |= secret_values(v, under_credential)
    elif under_credential and isinstance(obj, str) and _usable(obj):
        found.add(obj)
    return found


def env_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of credential-like environment variables (AWS_SECRET_ACCESS_KEY, *_TOKEN, *_PASSWORD, ...)."""
    environ = os.environ if environ is None else environ
    return {v for k, v in environ.items() if _is_env_credential(k) and _usable(v)}


def _value_pattern(secrets: Iterable[str]) -> re.Pattern | None:
    usable = sorted({s for s in secrets if _usable(s)}, key=len, reverse=True)  # longest first
    return re.compile("|".join(map(re.escape, usable))) if usable else None


def _userinfo_parts(text: str) -> list[str]:
    """`user:password`, `user` and `password` of every URL in `text`: the same text may quote them again
    without the scheme (a filesystem's stripped path)."""
    infos = [m[0][len(m["scheme"]):-1] for m in _USERINFO.finditer(text)]
    return [part for info in infos for part in (info, *info.split(":", 1))]


def _mask_query(match: re.Match) -> str:
    if is_credential_name(match["name"]) or match["name"].lower().startswith("x-amz-"):
        return f"{match['lead']}{match['name']}={MASK}"
    return match[0]


class Scrubber:
    """Masks credentials inside strings; built once per write (the environment is read then), applied
    to every string of it."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = frozenset(secrets) | env_secrets()
        self.pattern = _value_pattern(self.secrets)

    def __call__(self, text: str) -> str:
        pattern = self.pattern
        if "://" in text:
            extra = _userinfo_parts(text)
            pattern = _value_pattern(self.secrets.union(extra)) if extra else pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if "://" in text:
            text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
        if "=" in text:
            text = _QUERY_PARAM.sub(_mask_query, text)
        return text


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secret values (env and `secrets`), URL userinfo and credential query values masked."""
    return Scrubber(secrets)(text)


def redact(obj: Any, secrets: Iterable[str] = (), by_name: bool = True) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings) that holds no credential.

    by_name masks the values of credential-like keys; known secrets are the environment's, `secrets`
    and (by_name) the values under credential-like keys of `obj` itself, so a manifest that embeds
    storage_options also loses every quotation of them elsewhere. by_name=False is for rows, whose
    column names are a fixed schema.
    """
    return _walk(obj, Scrubber((*secrets, *(secret_values(obj) if by_name else ()))), by_name)


def _walk(obj: Any, scrub: Scrubber, by_name: bool) -> Any:
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, Mapping):
        return {(scrub(k) if isinstance(k, str) else k):
                (MASK if by_name and is_credential_name(k) and v not in (None, "") else _walk(v, scrub, by_name))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, scrub, by_name) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_walk(v, scrub, by_name) for v in obj)
    return obj


class RedactingFilter(logging.Filter):
    """Masks credentials in log records (message, arguments, traceback) before any handler writes them.

    Installed on the CLI's handlers (environment secrets, URLs) and on a sweep's driver-log handler (also
    the sweep's storage_options secrets).
    """

    def __init__(self, storage_options: Mapping | None = None):
        super().__init__()
        self.secrets = frozenset(secret_values(storage_options or {}, under_credential=False))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = redact_text(record.getMessage(), self.secrets), None
        except Exception:  # a malformed record: let logging report it as it would
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, self.secrets)
        return True


def add_redacting_filter(handler: logging.Handler, storage_options: Mapping | None = None) -> None:
    """Install a RedactingFilter on `handler` once (repeated set-up does not stack filters)."""
    if storage_options or not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter(storage_options))
