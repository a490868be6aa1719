"""Imports go one way: from the entry points down to the base modules, never back up."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each package (or top-level module) and its layer; a module imports only from lower layers.
# github, box, config and store are ranked among themselves too, as they import each other
# one way: config reads files through GitHub and checks models against Box's catalogue, and
# GitHub's tracking comments keep what they showed in the store.
LAYERS = {
    "bot.store": 1,
    "bot.box": 1,
    "bot.sim": 1,
    "bot.github": 2,
    "bot.config": 3,
    "bot.runs": 4,
    "handlers": 5,
    "bot.ingress": 6,
    "bot.ops": 7,
    "bot.cli": 8,
}
BASE = frozenset(
    {"bot", "bot.json_codec", "bot.logs", "bot.metrics", "bot.models", "bot.redact", "bot.settings"}
)
# Base modules import only one another, with one exception: settings checks BOX_PROVIDER and
# BOX_MODEL against Box's catalogue, and BOX_MACHINE, BOX_ENVIRONMENT and BOX_SETUP_FILE
# against its rules for new boxes: tables of facts that themselves import nothing of the app.
BASE_MAY_IMPORT = {"bot.settings": frozenset({"bot.box.catalogue", "bot.box.box_rules"})}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str | None:
    """The layered unit a module belongs to: its package under bot/, or itself at the top."""
    parts = module.split(".")
    if parts[0] == "handlers":
        return "handlers"
    if parts[0] != "bot":
        return None
    return module if len(parts) == 1 else f"bot.{parts[1]}"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, with the line (imports under TYPE_CHECKING count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            assert node.module is not None
            found.append((node.lineno, node.module))
    return found


def allowed(source: str, target: str) -> bool:
    """Whether module *source* may import module *target*."""
    src, dst = unit_of(source), unit_of(target)
    if dst is None or src == dst:
        return True
    assert src is not None
    if src in BASE:
        return dst in BASE or target in BASE_MAY_IMPORT.get(source, frozenset())
    return dst in BASE or LAYERS[dst] < LAYERS[src]


def upward_imports() -> list[str]:
    files = sorted([*(ROOT / "bot").rglob("*.py"), *(ROOT / "handlers").rglob("*.py")])
    return [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in files
        for line, target in imports_of(path)
        if not allowed(module_name(path), target)
    ]


def test_every_package_has_a_layer() -> None:
    units = {unit_of(module_name(path)) for path in (ROOT / "bot").rglob("*.py")}
    assert units - BASE == set(LAYERS) - {"handlers"}


def test_no_module_imports_upward() -> None:
    assert upward_imports() == []


def test_an_upward_import_is_caught() -> None:
    assert not allowed("bot.runs.manager", "handlers.common")
    assert not allowed("bot.store.operations", "bot.runs.limits")
    assert not allowed("bot.github.commands", "bot.runs.prompt")
    assert not allowed("bot.models", "bot.store.records")
    assert not allowed("bot.settings", "bot.box.client")
    assert allowed("handlers.issues", "bot.runs.manager")
