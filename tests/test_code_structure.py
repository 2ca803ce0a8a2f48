"""The house rules a reader relies on, checked on the source: no import cycle between the project's modules,
imports at module top (inside functions only for the optional packages: GPU kernels, the wandb sink and the deepspeed engine), no ``sys.path`` edits, tools and
benchmarks that import the library and never ``tests/``, and a trainer loop small enough to read."""
from __future__ import annotations

import ast
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("liquid_train", "data_pipeline")
SCRIPTS = ("tools", "benchmarks")
OPTIONAL = ("transformer_engine", "apex", "fused_weight_gradient_mlp_cuda", "flash_attn", "wandb", "deepspeed")


def _files(*roots):
    for root in roots:
        yield from sorted((REPO / root).rglob("*.py"))


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_package(name: str) -> bool:
    return (REPO / pathlib.Path(*name.split(".")) / "__init__.py").exists()


def _targets(node, module: str):
    """Project modules an import statement loads (``from pkg import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".")[: -node.level] if not _is_package(module) else module.split(".")[: len(
            module.split(".")) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if (REPO / pathlib.Path(*sub.split("."))).with_suffix(".py").exists() or _is_package(sub)
                   else base)
    return out


def import_graph():
    graph = {}
    for path in _files(*PACKAGES):
        module = _module_name(path)
        edges = set()
        for node in ast.parse(path.read_text()).body:  # module-level imports only: what runs at import time
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= {t for t in _targets(node, module) if t.split(".")[0] in PACKAGES and t != module}
        graph[module] = edges
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_at_module_top():
    inner = []
    for path in _files(*PACKAGES, *SCRIPTS):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        name = sub.module if isinstance(sub, ast.ImportFrom) else sub.names[0].name
                        if not (name or "").startswith(OPTIONAL):
                            inner.append(f"{path.relative_to(REPO)}:{sub.lineno} {name}")
    assert not inner, f"{len(inner)} imports inside functions:\n" + "\n".join(inner)


def test_no_sys_path_edits_and_no_imports_of_tests():
    bad = []
    for path in _files(*PACKAGES, *SCRIPTS):
        text = path.read_text()
        if "sys.path.insert" in text or "sys.path.append" in text:
            bad.append(f"{path.relative_to(REPO)}: edits sys.path")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(n == "tests" or n.startswith(("tests.", "test_", "helpers_")) for n in names):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: imports the tests")
    assert not bad, "\n".join(bad)


def test_trainer_loop_is_small():
    lines = len((REPO / "liquid_train/training/trainer.py").read_text().splitlines())
    assert lines < 250, lines
    assert os.path.isdir(REPO / "liquid_train/training/callbacks")
