"""Vocabularies of concepts to label units with: shipped ones by name, or a user's file.

    imagenet    the 1,000 ImageNet class names (open_clip's cleaned list, the one its zero-shot
                classifiers use)
    common      common English nouns and adjectives: the word lists of the `wonderwords` package
                (MIT licence; 6,782 nouns and 912 adjectives), without its profanity list, nouns
                first, each kept once: the paper's concepts ("music", "morbidity", "many") are words
                like these, not object classes
    PATH / URL  a text file, one concept per line; blank lines and lines starting with # are
                skipped, repeats kept once (first place)

A concept is one line of printable text of at most 100 characters; a file has at most 50,000.
"""

from __future__ import annotations

import urllib.parse

import fsspec

from sweep.core.errors import SweepError, one_line

SHIPPED = ("imagenet", "common")
MAX_CONCEPTS = 50_000
MAX_LENGTH = 100


def load_vocabulary(spec: str, storage_options: dict | None = None) -> tuple[str, tuple[str, ...]]:
    """(name, concepts) of a shipped vocabulary or a file; one SweepError line for a bad one."""
    if spec == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return "imagenet", tuple(IMAGENET_CLASSNAMES)
    if spec == "common":
        return "common", common_words()
    if not isinstance(spec, str) or not spec.strip():
        raise SweepError(f"--vocabulary: give a shipped vocabulary ({', '.join(SHIPPED)}) or a file of concepts")
    try:
        with fsspec.open(spec, "rb", **(storage_options or {})) as fh:
            raw = fh.read(MAX_CONCEPTS * (MAX_LENGTH + 2) + 1)
    except (OSError, ValueError) as exc:
        raise SweepError(f"--vocabulary {spec!r}: cannot read it ({one_line(exc, 160)}); allowed: "
                         f"{', '.join(SHIPPED)} or a file of one concept per line") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SweepError(f"--vocabulary {spec!r}: not UTF-8 text (one concept per line)") from None
    concepts: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        concept = line.strip()
        if not concept or concept.startswith("#"):
            continue
        if len(concept) > MAX_LENGTH or not concept.isprintable():
            raise SweepError(f"--vocabulary {spec!r} line {number}: a concept is printable text of at most "
                             f"{MAX_LENGTH} characters")
        concepts.setdefault(concept)
    if not concepts:
        raise SweepError(f"--vocabulary {spec!r}: no concepts in it (one per line)")
    if len(concepts) > MAX_CONCEPTS:
        raise SweepError(f"--vocabulary {spec!r}: {len(concepts)} concepts; at most {MAX_CONCEPTS}")
    # Its name in rows and pages: the file's base name, never a URL's query (which may carry a token).
    return urllib.parse.urlsplit(spec).path.rstrip("/").rsplit("/", 1)[-1] or "file", tuple(concepts)


def common_words() -> tuple[str, ...]:
    """wonderwords' nouns then adjectives, minus its profanity list, each once, in the lists' order."""
    from importlib.resources import files

    assets = files("wonderwords") / "assets"

    def words(name: str) -> list[str]:
        return [w.strip() for w in (assets / name).read_text(encoding="utf-8").splitlines() if w.strip()]

    banned = {w.lower() for w in words("profanitylist.txt")}
    return tuple(dict.fromkeys(w for w in words("nounlist.txt") + words("adjectivelist.txt") if w.lower() not in banned))
