"""The design's dependency rules, read from every module's imports (ast): a new arrow the design
forbids fails here, wherever it is written (top level or inside a function).

- core imports none of bots, worker, training, nor torch / diffusers / discord / telegram;
- bots import no torch, diffusers, worker or training;
- training imports no worker, celery or bots;
- worker imports of bots only ``bots/<platform>/send.py``.

The composition roots may cross those arrows, and only to a package's ``cli`` modules (its command
line, the one door into it): the ``imaginebot`` command's table (``worker/cli.py``), which names every
owner's ``cli`` module as text and imports none, and ``imaginebot up`` (``worker/up_cli.py``), which
serves the web chat in its own process beside the supervisor and opens it through the web chat's
launcher.

``KNOWN`` lists the arrows that exist today and are still to be removed; it may only shrink: an entry
that no longer occurs fails the test too, so a removed arrow cannot come back unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "bots", "worker", "training")

#: package -> top-level modules it must not import.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "core": ("bots", "worker", "training", "torch", "torchvision", "diffusers", "discord", "telegram"),
    "bots": ("torch", "torchvision", "diffusers", "worker", "training"),
    "training": ("worker", "celery", "bots"),
    "worker": ("bots",),
}
#: What worker may import of bots: each platform's sender, which imports no torch.
WORKER_MAY_IMPORT = {"bots.discord.send", "bots.telegram.send", "bots.web.send"}

#: Files that compose the packages into commands: they may import other packages' ``cli`` modules.
COMPOSITION_ROOTS = {"worker/cli.py", "worker/up_cli.py"}

#: (importing file, imported module) pairs that exist today and are still to be removed.
KNOWN: set[tuple[str, str]] = set()


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _violations() -> set[tuple[str, str]]:
    bad: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for module in _imports(path):
                top = module.split(".")[0]
                if top not in FORBIDDEN[package]:
                    continue
                if rel in COMPOSITION_ROOTS and top in PACKAGES and _is_cli_module(module):
                    continue
                if package == "worker" and top == "bots":
                    if any(module == m or module.startswith(m + ".") for m in WORKER_MAY_IMPORT):
                        continue
                    # ``from bots.web import send`` names the module as bots.web + bots.web.send
                    if any(m.startswith(module + ".") for m in WORKER_MAY_IMPORT):
                        continue
                bad.add((rel, module))
    return bad


def _by_module(pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Collapse ``from x import y`` duplicates (x and x.y) onto the module that is a real file."""
    kept = set()
    for rel, module in pairs:
        parts = module.split(".")
        as_file = ROOT.joinpath(*parts).with_suffix(".py")
        as_package = ROOT.joinpath(*parts) / "__init__.py"
        if as_file.is_file() or as_package.is_file() or parts[0] not in PACKAGES:
            kept.add((rel, module))
    return kept


def test_no_module_imports_across_a_forbidden_arrow() -> None:
    found = _by_module(_violations())
    new = sorted(found - KNOWN)
    assert not new, "imports the design forbids:\n" + "\n".join(f"  {f} -> {m}" for f, m in new)


def test_the_known_exceptions_only_shrink() -> None:
    gone = sorted(KNOWN - _by_module(_violations()))
    assert not gone, "no longer imported, remove from KNOWN:\n" + "\n".join(f"  {f} -> {m}" for f, m in gone)


def test_the_checker_sees_imports_inside_functions() -> None:
    """The rules are checked on lazy imports too (most of ours are inside functions)."""
    imports = _imports(ROOT / "worker" / "up_cli.py")
    assert "bots.web.cli" in imports and "typer" in imports


def _is_cli_module(module: str) -> bool:
    """``x.cli``, ``x.something_cli`` or a module of a ``cli`` package (``bots.cli.imagine``)."""
    return any(part == "cli" or part.endswith("_cli") for part in module.split(".")[1:])


def test_the_composition_root_names_only_cli_modules_and_imports_no_package() -> None:
    """Each table entry is a ``cli`` module that exists and holds its command; the root imports
    nothing of bots, worker or training (core's log redaction only): it names them as text."""
    from worker.cli import COMMANDS, load_command

    for name, target in COMMANDS.items():
        module = target.partition(":")[0]
        assert module.split(".")[0] in PACKAGES, f"{name}: {module} is outside the packages"
        assert _is_cli_module(module), f"{name}: {module} is no cli module"
        assert ROOT.joinpath(*module.split(".")).with_suffix(".py").is_file(), f"{name}: no {module}"
        assert load_command(name, target).name == name
    imported = {m.split(".")[0] for m in _imports(ROOT / "worker" / "cli.py")} & set(PACKAGES)
    assert imported <= {"core"}, f"the root imports {sorted(imported)}"


def test_the_cli_module_check_can_fail() -> None:
    assert _is_cli_module("bots.web.cli") and _is_cli_module("bots.cli.imagine")
    assert _is_cli_module("training.damsm_cli") and not _is_cli_module("bots.web.server")
