"""``audioproc`` is the job image's package and the library the other two build on (models,
settings, storage): it never imports the REST facade or the operator, not even inside a
function, so that the job image needs neither and the packages form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "audioproc"
DEPENDENT_PACKAGES = ("audioproc_api", "audioproc_operator")


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names, wherever it stands in the file."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_imported_modules_sees_imports_inside_functions() -> None:
    tree = ast.parse(
        "def f():\n    from audioproc_api.cli import serve\n    import audioproc_operator\n"
    )
    assert imported_modules(tree) == [(2, "audioproc_api.cli"), (3, "audioproc_operator")]


def test_audioproc_imports_neither_the_facade_nor_the_operator() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "cli.py" in files, "the package was not found"
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(ast.parse(path.read_text(), str(path)))
        if module.split(".")[0] in DEPENDENT_PACKAGES
    ]
    assert not offending, "audioproc must not import its dependents:\n" + "\n".join(offending)
