"""The package's rooms and the one-way rule between them, checked on the source (no imports run).

Each room may import only from the rooms below it (`ORDER`); `ray` is imported by `sweep.pipelines`
alone, so the science and storage code run and test without a Ray instance.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sweep"

#: The rooms, bottom up: each may import only from the rooms before it (and itself).
ORDER = ("core", "models", "store", "data", "method", "experiments", "work", "views", "pipelines", "cli")
MAY_IMPORT = {room: set(ORDER[:i]) for i, room in enumerate(ORDER)}


def room_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[str]:
    """Every module a file imports, at the top or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [f"{node.module}.{a.name}" if node.module == "sweep" else node.module for a in node.names]
    return found


def modules():
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__main__.py" and "__pycache__" not in p.parts]


def test_only_the_pipelines_import_ray():
    offenders = [f"{p.relative_to(PACKAGE.parent)} imports {m}" for p in modules() if room_of(p) != "pipelines"
                 for m in imports(p) if m == "ray" or m.startswith("ray.")]
    assert not offenders, offenders


def test_rooms_import_only_downwards():
    rooms = set(MAY_IMPORT) | {"__init__"}
    assert {room_of(p) for p in modules()} <= rooms, "a new room: give it its place in MAY_IMPORT"
    offenders = []
    for p in modules():
        room = room_of(p)
        allowed = MAY_IMPORT.get(room, set()) | {room}
        for m in imports(p):
            parts = m.split(".")
            if parts[0] == "sweep" and len(parts) > 1 and parts[1] not in allowed and parts[1] != "__version__":
                offenders.append(f"{p.relative_to(PACKAGE.parent)} ({room}) imports {m}")
    assert not offenders, "\n".join(offenders)
