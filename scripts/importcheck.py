"""Fail when any import cycle exists among rexcarcer's modules.

import-linter's layers contract (pyproject.toml) keeps packages importing only
downward; a cycle between two modules of one package, or through a function-level
or ``TYPE_CHECKING`` import, is still a cycle, and this finds every one: it builds
the module graph with grimp (import-linter's own) and reports each strongly
connected component of more than one module, with the imports that tie it.

    .venv/bin/python scripts/importcheck.py
"""

from __future__ import annotations

import sys

import grimp


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's strongly connected components of size > 1, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:
        nonlocal counter
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def main() -> int:
    graph = grimp.build_graph("rexcarcer", exclude_type_checking_imports=False)
    found = cycles(graph)
    for component in found:
        print(f"import cycle of {len(component)} modules:", file=sys.stderr)
        members = set(component)
        for module in component:
            for target in sorted(graph.find_modules_directly_imported_by(module) & members):
                print(f"  {module} -> {target}", file=sys.stderr)
    if found:
        return 1
    print(f"no import cycle among {len(graph.modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
