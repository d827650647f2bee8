"""The code's layers point one way: storage (pipelines/core) <- quality <- curation, online stages, training <- entry points.

Read from the source with ``ast`` (nothing is imported): every ``prefhouse.*`` import of every module, mapped
to the package it lives in. No module imports a package of a higher layer, and the packages of one layer
import each other without a loop.
"""

from __future__ import annotations

import ast

from .conftest import REPO

# package -> layer (0 lowest); a package is a folder of the card's layout, or an entry-point module
LAYERS = {
    "pipelines.core": 0,
    "quality": 1,
    "pipelines.sources": 2, "pipelines.online": 2, "training": 2, "pipelines.curate": 2,
    "pipelines.cli": 3, "pipelines.run_loop": 3, "pipelines.run_iteration": 3, "pipelines.evaluate_policy": 3, "pipelines.sql": 3, "pipelines.maintain": 3,
    "pipelines.parsers": 3,
}


def package_of(module: str) -> str | None:
    """The LAYERS key that holds ``module`` (``prefhouse.``-less dotted name); None for the namespace's own ``__init__``."""
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)


def project_imports() -> dict[str, set[str]]:
    """For each package, the packages its modules import."""
    edges: dict[str, set[str]] = {p: set() for p in LAYERS}
    for folder in ("pipelines", "training", "quality"):
        for path in (REPO / folder).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            source = package_of(module)
            if source is None:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    if name.startswith("prefhouse."):
                        target = package_of(name.removeprefix("prefhouse."))
                        if target is not None and target != source:
                            edges[source].add(target)
    return edges


def test_no_package_imports_a_higher_layer() -> None:
    upward = sorted((s, t) for s, targets in project_imports().items() for t in targets if LAYERS[t] > LAYERS[s])
    assert upward == []


def test_packages_of_one_layer_import_each_other_without_a_loop() -> None:
    edges = project_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t})) for t in edges[start])

    loops = sorted(p for p in LAYERS if reaches(p, p, {p}))
    assert loops == []


def test_every_module_belongs_to_a_layer() -> None:
    for folder in ("pipelines", "training", "quality"):
        for path in (REPO / folder).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            assert any(module == p or module.startswith(p + ".") for p in LAYERS) or module in ("pipelines.__init__",), module
