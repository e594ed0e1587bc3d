#!/usr/bin/env python3
"""Import circles among the modules of src/, from cargo-modules' graph.

    cargo modules dependencies --lib -p elastic-cart --no-fns --no-types --no-traits \\
        --no-externs --no-sysroot --no-owns > deps.dot
    scripts/module_circles.py deps.dot

Every "uses" edge is mapped to the modules at its ends (cargo-modules keeps a type's methods
and impls as nodes of their own, which is why its --acyclic cannot be used as is). A
module's use of its own submodules does not count (a parent may use what it declares);
every other use does: of a sibling, of a parent, across the tree. Prints each circle with
its edges; exits 1 if there is one.
"""
import re
import sys


def module_graph(dot):
    modules = set(re.findall(r'^\s*"([^"]+)" \[label=.*// "(?:mod|crate)" node', dot, re.M))

    def module_of(node):
        while node not in modules and "::" in node:
            node = node.rsplit("::", 1)[0]
        return node

    edges = set()
    for a, b in re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"', dot, re.M):
        a, b = module_of(a), module_of(b)
        if a != b and not b.startswith(a + "::"):
            edges.add((a, b))
    return modules, edges


def circles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        modules, edges = module_graph(f.read())
    found = circles(edges)
    print(f"{len(modules)} modules, {len(edges)} uses between them: {len(found)} circles")
    for component in found:
        print("  circle: " + ", ".join(component))
        for a, b in sorted(edges):
            if a in component and b in component:
                print(f"    {a} -> {b}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
