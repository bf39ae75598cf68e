"""The jails' ``DEPENDS`` graph: checks for ``rex up`` and the order in which the
host agent starts jails. Pure; a graph maps a jail to the jails it depends on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Graph = Mapping[str, Sequence[str]]


def find_cycle(graph: Graph, start: str) -> list[str] | None:
    """A cycle through ``start`` as a path ``[start, ..., start]``, or None.

    Only a cycle through ``start`` matters to ``rex up``: the graph without the
    jail being defined had none (every earlier ``rex up`` checked)."""
    path: list[str] = [start]
    seen: set[str] = set()

    def walk(node: str) -> list[str] | None:
        for dep in sorted(graph.get(node, ())):
            if dep == start:
                return [*path, start]
            if dep in seen:
                continue
            seen.add(dep)
            path.append(dep)
            found = walk(dep)
            if found is not None:
                return found
            path.pop()
        return None

    return walk(start)


def start_order(graph: Graph) -> list[str]:
    """Every jail of ``graph``, each after the jails it depends on that are in the
    graph (others are another host's business); by name where the order is free.
    Jails on a cycle (only a store edited by hand has one) come last, by name."""
    pending = {name: {d for d in deps if d in graph and d != name} for name, deps in graph.items()}
    order: list[str] = []
    while pending:
        ready = sorted(n for n, deps in pending.items() if not deps)
        if not ready:
            order += sorted(pending)
            break
        for name in ready:
            del pending[name]
        for deps in pending.values():
            deps.difference_update(ready)
        order += ready
    return order


def dependents(graph: Graph, name: str) -> list[str]:
    """The jails that depend on ``name``, by name."""
    return sorted(n for n, deps in graph.items() if name in deps and n != name)
