"""The architecture as tests: layering of the packages, no import cycles, one home per convention.

Layers, lowest first (a module may import its own package and strictly lower layers, lazily or not):
ground (validation, model state, files, batches, distributed) -> spectral core -> data -> attributions ->
attacks / defenses / training -> eval -> compat -> models (model-spec loading) -> report -> cli.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "freqplug"

LAYER = {
    "_version": 0, "_validation": 0, "_optional": 0, "_lazy": 0.5,
    "_model": 1, "_io": 1, "_batches": 1, "_distributed": 1,
    "spectral": 2,
    "data": 3,
    "attributions": 4,
    "attacks": 5, "defenses": 5, "training": 5, "plots": 5,
    "eval": 6,
    "compat": 7,
    # The embedded model and the model-spec loader, which resolves RobustBench names through compat.
    "models": 7.5,
    "report": 8,
    "cli": 9,
    "__init__": 10, "__main__": 10,
}

#: Deprecated aliases kept for one release: (importing module, imported package) pairs allowed to point upward.
#: Each is a lazy module ``__getattr__`` that warns; remove the entry with the alias.
DEPRECATION_SHIMS = {("freqplug.eval", "compat")}


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path, path.name == "__init__.py"


def _imports(name: str, path: Path, is_package: bool):
    """Absolute freqplug module names imported anywhere in the file (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("freqplug"):
                submodules = [f"{target}.{alias.name}" for alias in node.names]
                found = [m for m in submodules if m in ALL]  # `from .. import _io` imports a submodule
                if len(found) < len(submodules):
                    yield target, node.lineno
                for module in found:
                    yield module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("freqplug"):
                    yield alias.name, node.lineno


def _module_names():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALL = set(_module_names())


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer():
    missing = sorted({_top(name) for name in ALL} - set(LAYER))
    assert not missing, f"packages without a layer in LAYER: {missing}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = []
    for name, path, is_package in _modules():
        here = _top(name)
        for target, line in _imports(name, path, is_package):
            if target not in ALL:
                continue  # `from x import function` adds non-module names; they live in x
            there = _top(target)
            if there == here or (name, there) in DEPRECATION_SHIMS or (here == "__init__"):
                continue
            if LAYER[there] >= LAYER[here]:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {here} (layer {LAYER[here]}) imports "
                           f"{target} (layer {LAYER[there]})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    graph = {name: set() for name in ALL}
    for name, path, is_package in _modules():
        for target, _ in _imports(name, path, is_package):
            if target in ALL and target != name and not target.startswith(name + ".") \
                    and not (is_package and target.startswith(name)):
                if (name, _top(target)) in DEPRECATION_SHIMS:
                    continue
                graph[name].add(target)
    # a package __init__ importing its own submodules is not a cycle of code
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])


def test_captum_private_api_has_one_importer():
    users = sorted(str(p.relative_to(SRC.parent)) for _, p, _ in _modules() if "captum._utils" in p.read_text())
    assert users == ["freqplug/attributions/_captum.py"], users


def _reseeds_outside_a_fork(tree: ast.AST):
    """Lines that seed a global RNG (torch/numpy/random) outside a ``with torch.random.fork_rng(...)`` block."""
    seeders = {"manual_seed", "seed"}
    bad = []

    def forked(node: ast.With) -> bool:
        return any(isinstance(item.context_expr, ast.Call) and ast.unparse(item.context_expr.func).endswith("fork_rng")
                   for item in node.items)

    def visit(node, inside_fork):
        if isinstance(node, ast.With) and forked(node):
            inside_fork = True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in seeders:
            owner = ast.unparse(node.func.value)
            if owner in ("torch", "torch.cuda", "torch.random", "np.random", "numpy.random", "random") \
                    and not inside_fork:
                bad.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, inside_fork)

    visit(tree, False)
    return bad


def test_no_global_rng_reseeding():
    bad = [f"{p.relative_to(SRC.parent)}:{line}" for _, p, _ in _modules()
           for line in _reseeds_outside_a_fork(ast.parse(p.read_text()))]
    assert not bad, f"global RNG reseeded at {bad}; use a torch.Generator or fork the RNG around it"


def test_reseeding_check_catches_a_bare_seed_and_allows_a_forked_one():
    bare = ast.parse("import torch\ntorch.manual_seed(0)\n")
    forked = ast.parse("import torch\nwith torch.random.fork_rng(devices=[]):\n    torch.manual_seed(0)\n")
    generator = ast.parse("import torch\ng = torch.Generator().manual_seed(0)\n")
    assert _reseeds_outside_a_fork(bare) == [2]
    assert _reseeds_outside_a_fork(forked) == []
    assert _reseeds_outside_a_fork(generator) == []


@pytest.mark.parametrize("root", ["src", "README.md", "examples", "bench"])
def test_papers_are_cited_by_author_year(root):
    base = Path(__file__).resolve().parents[1] / root
    files = [base] if base.is_file() else [p for p in base.rglob("*") if p.suffix in (".py", ".md")]
    bad = [f"{p}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"\bseeds? 00\d", line)]
    assert not bad, f"paper tags 'seed 00x' (read as random seeds) instead of author-year: {bad[:10]}"
