#!/usr/bin/env bash
# check-architecture.sh: the layering rules of the workspace, checked from the source tree.
#
#   1. crate graph   the workspace crates' dependencies (normal, dev and build) form no cycle;
#   2. module graph  inside each crate, the top-level modules (what sits directly under src/;
#                    lib.rs and main.rs are the root) do not reference each other in a cycle
#                    through `crate::x` (or `super::…` climbing to the crate root);
#   3. citations     no tracked file cites the old upstream reference by section, and every
#                    `compat §x.y` in tracked .rs/.md/.yaml files names a heading of docs/compat.md.
#
# Prints every offender, then one summary line; exits 1 when any check failed.
# Usage: scripts/check-architecture.sh [REPO_ROOT]   (default: the repository holding this script)
set -euo pipefail

root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$root"

metadata="$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null ||
	cargo metadata --format-version 1 --no-deps)"

# Tracked files (falls back to every file when the tree is not a git checkout, e.g. a copy).
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	files="$(git -C "$root" ls-files)"
else
	files="$(find . -type f -not -path './target/*' -not -path './.git/*' | sed 's|^\./||')"
fi

METADATA="$metadata" FILES="$files" exec python3 - "$root" <<'PY'
import json
import os
import re
import sys

root = sys.argv[1]
meta = json.loads(os.environ["METADATA"])
tracked = [f for f in os.environ["FILES"].splitlines() if f]
results = []  # (name, [problems])


def find_cycle(graph):
    """Return one cycle as a list of nodes (first == last), or None."""
    state = {}  # node -> 1 on the stack, 2 done
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# 1. crate graph, dev- and build-dependencies included.
members = {p["name"]: p for p in meta["packages"] if p["id"] in meta["workspace_members"]}
crate_graph = {name: set() for name in members}
for name, pkg in members.items():
    for dep in pkg["dependencies"]:
        if dep["name"] in members and dep["name"] != name:
            crate_graph[name].add(dep["name"])
cycle = find_cycle(crate_graph)
problems = []
if cycle:
    problems.append("crate dependency cycle (dev/build included): " + " -> ".join(cycle))
results.append(("crate graph", problems))

# 2. module graph of each crate's top-level modules.
ref_crate = re.compile(r"\bcrate::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)", re.S)
ref_super = re.compile(r"\b((?:super::)+)(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)", re.S)
line_comment = re.compile(r"//[^\n]*")
block_comment = re.compile(r"/\*.*?\*/", re.S)


def strip_comments(text):
    text = block_comment.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return line_comment.sub("", text)


def first_idents(group):
    """Top-level names in `x` or `{a, b::c, d::{e}}`."""
    if not group.startswith("{"):
        return [group]
    names, depth, cur = [], 0, ""
    for ch in group[1:-1]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            names.append(cur)
            cur = ""
            continue
        cur += ch if depth == 0 else ""
    names.append(cur)
    out = []
    for n in names:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", n)
        if m:
            out.append(m.group(1))
    return out


problems = []
for name, pkg in sorted(members.items()):
    src = os.path.join(os.path.dirname(pkg["manifest_path"]), "src")
    if not os.path.isdir(src):
        continue
    modules = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            modules.setdefault(entry[:-3], [])
        elif os.path.isdir(path) and entry != "bin":
            modules.setdefault(entry, [])
    for mod in modules:
        files = []
        single = os.path.join(src, mod + ".rs")
        if os.path.isfile(single):
            files.append(single)
        tree = os.path.join(src, mod)
        if os.path.isdir(tree):
            for dirpath, _, names in os.walk(tree):
                files += [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".rs")]
        modules[mod] = files
    graph = {m: set() for m in modules}
    evidence = {}
    for mod, files in modules.items():
        for path in files:
            rel = os.path.relpath(path, src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            depth = len(parts)  # `super` climbs this many times to reach the crate root
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = strip_comments(fh.read())
            hits = [(m.start(), m.group(1)) for m in ref_crate.finditer(text)]
            for m in ref_super.finditer(text):
                if m.group(1).count("super::") == depth:
                    hits.append((m.start(), m.group(2)))
            for pos, group in hits:
                for target in first_idents(group):
                    if target in modules and target != mod:
                        graph[mod].add(target)
                        line = text.count("\n", 0, pos) + 1
                        where = os.path.relpath(path, root) + ":" + str(line)
                        evidence.setdefault((mod, target), where)
    cycle = find_cycle(graph)
    if cycle:
        steps = [
            f"{a} -> {b} ({evidence[(a, b)]})" for a, b in zip(cycle, cycle[1:])
        ]
        problems.append(f"{name}: module cycle " + " -> ".join(cycle) + "\n      " + "\n      ".join(steps))
results.append(("module graph", problems))

# 3. citations.
problems = []
old_phrase = re.compile("refer" + r"ence\s+§")
compat_path = "docs/compat.md"
headings = set()
if os.path.isfile(os.path.join(root, compat_path)):
    with open(os.path.join(root, compat_path), encoding="utf-8") as fh:
        for line in fh:
            m = re.match(r"#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", line)
            if m:
                headings.add(m.group(1))
else:
    problems.append(f"{compat_path} is missing: compat citations cannot resolve")
cite = re.compile(r"compat\s+§\s?(\d+(?:\.\d+)*)")
for rel in tracked:
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        continue
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (UnicodeDecodeError, OSError):
        continue
    for lineno, line in enumerate(text.splitlines(), 1):
        if rel != compat_path and old_phrase.search(line):
            problems.append(f"{rel}:{lineno}: cites the upstream reference; cite `compat §x.y` instead")
        if rel.endswith((".rs", ".md", ".yaml", ".yml")):
            for m in cite.finditer(line):
                if headings and m.group(1) not in headings:
                    problems.append(f"{rel}:{lineno}: compat §{m.group(1)} is not a heading of {compat_path}")
results.append(("citations", problems))

failed = 0
for check, found in results:
    if found:
        failed += 1
        print(f"FAIL {check}: {len(found)} problem(s)")
        for p in found[:50]:
            print("    " + p)
        if len(found) > 50:
            print(f"    … and {len(found) - 50} more")
    else:
        print(f"ok   {check}")
print(f"architecture: {len(results) - failed} checks passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
