"""One genotype type for all five methods, its JSON form, the text forms, random cells, DOT export and pictures.

A cell is a list of intermediate nodes; a node is a list of (op, input) pairs
and sums their outputs. States are numbered as in DARTS: the cell inputs first
(0 and 1; NAS-Bench-201 cells have the single input 0), then the nodes. This
covers every method's output:

- DARTS style: two pairs per node (MSG-DAS, EnTranNAS, DARTS-PT, DARTS-PD);
- flexible topology: any number of pairs per node (EnTranNAS-DST, D-DARTS);
- several ops on one edge: pairs with the same input (D-DARTS edge parsing);
- one cell per layer with the reduction positions (D-DARTS): `Genotype.cells`;
- NAS-Bench-201 cells (DARTS-PT): a single-input cell whose output is its last node.

Usage: python -m common.genotypes show ARCH [--dataset cifar10] [--layers L] [--init_channels C] [--dot FILE]
                                       [--draw FILE.png|FILE.svg]
       python -m common.genotypes list      every published genotype by name, with its source
"""
import argparse
import ast
import functools
import json
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from common.operations import NB201_OPS, OPS


class GenotypeError(ValueError):
    """A genotype that cannot be read or is not valid."""


MAX_TEXT = 100_000  # characters of a DARTS text or NAS-Bench-201 string (a published cell has about 600)


def _short(value, most=60):
    """repr(value), cut to `most` characters: messages quote what they were given, never all of it."""
    text = repr(value)
    return text if len(text) <= most else text[:most - 3] + "..."


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class Cell:
    nodes: tuple  # nodes[i] = ((op, input), ...) for the state num_inputs + i
    concat: tuple  # the states whose concatenation is the cell output
    num_inputs: int = 2

    @property
    def num_states(self):
        return self.num_inputs + len(self.nodes)

    def pairs(self):
        """(node index, op, input) for every op of the cell, in order."""
        return [(i, op, j) for i, node in enumerate(self.nodes) for op, j in node]

    def validate(self, known_ops, where="cell"):
        if self.num_inputs not in (1, 2):
            raise GenotypeError(f"{where}: num_inputs {_short(self.num_inputs)} must be 2 (DARTS cells) or 1 "
                                "(NAS-Bench-201 cells)")
        if not self.nodes:
            raise GenotypeError(f"{where}: no nodes")
        for i, node in enumerate(self.nodes):
            state = self.num_inputs + i
            if not node:
                raise GenotypeError(f"{where}: node {state} has no input")
            for op, j in node:
                if not isinstance(op, str) or op not in known_ops:
                    raise GenotypeError(f"{where}: unknown op {_short(op)} at node {state}; known ops: "
                                        f"{', '.join(sorted(known_ops))}")
                if not _is_int(j) or not 0 <= j < state:
                    raise GenotypeError(f"{where}: node {state} takes input {_short(j)}; it must be a whole number, "
                                        f"a state before it (0..{state - 1})")
        if not self.concat or any(not _is_int(c) or not 0 <= c < self.num_states for c in self.concat):
            raise GenotypeError(f"{where}: concat {_short(list(self.concat))} must name states "
                                f"0..{self.num_states - 1} (whole numbers)")


@dataclass(frozen=True)
class Genotype:
    """Either `normal` + `reduce` (shared cells), `cells` + `reductions` (one cell per
    layer), or `normal` alone with `num_inputs == 1` (a NAS-Bench-201 cell)."""
    normal: Cell = None
    reduce: Cell = None
    cells: tuple = ()
    reductions: tuple = ()
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def kind(self):
        if self.cells:
            return "per_cell"
        if self.normal is not None and self.normal.num_inputs == 1:
            return "nb201"
        return "darts"

    def named_cells(self):
        if self.kind == "per_cell":
            return [(f"cell_{i}" + ("_reduce" if i in self.reductions else ""), c)
                    for i, c in enumerate(self.cells)]
        if self.kind == "nb201":
            return [("cell", self.normal)]
        return [("normal", self.normal), ("reduce", self.reduce)]

    def validate(self):
        known = NB201_OPS if self.kind == "nb201" else OPS
        if self.kind == "darts" and (self.normal is None or self.reduce is None):
            raise GenotypeError("a genotype needs a normal and a reduce cell (or per-layer cells)")
        for name, cell in self.named_cells():
            cell.validate(known, name)
        if self.kind == "per_cell":
            r = list(self.reductions)
            if r != sorted(set(r)) or any(not 0 <= i < len(self.cells) for i in r):
                raise GenotypeError(f"reduction positions {r} must be distinct, increasing layer "
                                    f"indices in 0..{len(self.cells) - 1}")
        return self

    def layout(self, layers):
        """(cell, is_reduction) for each of `layers` layers of an evaluation network."""
        if self.kind == "per_cell":
            if layers != len(self.cells):
                raise GenotypeError(f"this genotype has {len(self.cells)} cells, not {layers}; "
                                    "pass --layers equal to its number of cells")
            return [(c, i in self.reductions) for i, c in enumerate(self.cells)]
        reductions = (layers // 3, 2 * layers // 3)
        return [(self.reduce if i in reductions else self.normal, i in reductions) for i in range(layers)]

    def __str__(self):
        if self.kind == "nb201":
            return to_nb201_string(self.normal)
        if self.kind == "darts" and all(len(n) == 2 for c in (self.normal, self.reduce) for n in c.nodes):
            return to_darts_text(self)
        lines = [f"{name}: " + " | ".join(
            f"{c.num_inputs + i} <- " + " + ".join(f"{op}({j})" for op, j in node)
            for i, node in enumerate(c.nodes)) + f"  concat {list(c.concat)}"
            for name, c in self.named_cells()]
        return "\n".join(lines)


# ---------------------------------------------------------------- JSON

def _cell_to_dict(cell):
    return {"nodes": [[[op, j] for op, j in node] for node in cell.nodes],
            "concat": list(cell.concat), "num_inputs": cell.num_inputs}


def _cell_from_dict(d, where):
    """A Cell from its JSON form, the types checked (no value is converted: 1.9 is not an input)."""
    if not isinstance(d, dict) or not isinstance(d.get("nodes"), list) or not isinstance(d.get("concat"), list):
        raise GenotypeError(f"{where}: a cell is {{\"nodes\": [[[op, input], ...], ...], \"concat\": [...]}}, "
                            f"not {_short(d)}")
    for node in d["nodes"]:
        if not isinstance(node, list) or not all(isinstance(p, list) and len(p) == 2 for p in node):
            raise GenotypeError(f"{where}: a node is a list of [op, input] pairs, not {_short(node)}")
    return Cell(tuple(tuple(tuple(p) for p in node) for node in d["nodes"]), tuple(d["concat"]), d.get("num_inputs", 2))


def to_dict(g):
    if g.kind == "nb201":
        d = {"nb201": to_nb201_string(g.normal)}
    elif g.kind == "per_cell":
        d = {"cells": [_cell_to_dict(c) for c in g.cells], "reductions": list(g.reductions)}
    else:
        d = {"normal": _cell_to_dict(g.normal), "reduce": _cell_to_dict(g.reduce)}
    return {**d, **g.meta}


def from_dict(d):
    if not isinstance(d, dict):
        raise GenotypeError("a genotype JSON must be an object")
    keys = ("nb201", "cells", "reductions", "normal", "reduce")
    meta = {k: v for k, v in d.items() if k not in keys}
    if "nb201" in d:
        g = Genotype(normal=parse_nb201(d["nb201"]), meta=meta)
    elif "cells" in d:
        cells, reductions = d["cells"], d.get("reductions", [])
        if not isinstance(cells, list) or not cells:
            raise GenotypeError(f"'cells' must be a list of cells, not {_short(cells)}")
        if not isinstance(reductions, list) or not all(map(_is_int, reductions)):
            raise GenotypeError(f"'reductions' must be a list of layer indices (whole numbers), not {_short(reductions)}")
        g = Genotype(cells=tuple(_cell_from_dict(c, f"cell {i}") for i, c in enumerate(cells)),
                     reductions=tuple(reductions), meta=meta)
    elif "normal" in d and "reduce" in d:
        g = Genotype(_cell_from_dict(d["normal"], "normal"), _cell_from_dict(d["reduce"], "reduce"), meta=meta)
    else:
        raise GenotypeError("a genotype JSON needs 'normal' and 'reduce', 'cells', or 'nb201'")
    return g.validate()


def save(path, g, **meta):
    """Write `g` as JSON with metadata (method, run, ...) beside it."""
    d = to_dict(Genotype(g.normal, g.reduce, g.cells, g.reductions, {**g.meta, **meta}))
    d["text"] = str(g)
    Path(path).write_text(json.dumps(d, indent=1) + "\n")


# ---------------------------------------------------------------- text forms

def _literal(node, what, kind=(int, str)):
    if isinstance(node, ast.Constant) and type(node.value) in kind:
        return node.value
    need = "a whole number" if kind == (int,) else "a plain string or whole number"
    raise GenotypeError(f"not a DARTS genotype: {what} must be {need}")


def _ops_list(node):
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise GenotypeError("not a DARTS genotype: normal/reduce must be lists of (op, input) pairs")
    pairs = []
    for item in node.elts:
        if not isinstance(item, ast.Tuple) or len(item.elts) != 2:
            raise GenotypeError("not a DARTS genotype: each entry must be an (op, input) pair")
        op, j = (_literal(e, "an (op, input) entry") for e in item.elts)
        if not isinstance(op, str) or not isinstance(j, int):
            raise GenotypeError("not a DARTS genotype: a pair is ('op_name', input_index)")
        pairs.append((op, j))
    if not pairs or len(pairs) % 2:
        raise GenotypeError("not a DARTS genotype: each node takes exactly two (op, input) pairs")
    return tuple(tuple(pairs[i:i + 2]) for i in range(0, len(pairs), 2))


def _concat(node, num_states, what="a concat"):
    """The states a concat names: a list of whole numbers or range(a, b), within 0..num_states-1
    (checked before a range is expanded: range(2, 20000000) is refused, not built)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
            and not node.keywords and 1 <= len(node.args) <= 2:
        bounds = [_literal(a, f"{what} range bound", (int,)) for a in node.args]
        a, b = ([0] + bounds)[-2:]
        if not 0 <= a < b <= num_states:
            raise GenotypeError(f"not a DARTS genotype: {what} range({', '.join(map(str, bounds))}) must lie "
                                f"within 0..{num_states - 1}")
        return tuple(range(a, b))
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(_literal(e, f"{what} index", (int,)) for e in node.elts)
    raise GenotypeError(f"not a DARTS genotype: {what} is a list of whole numbers or range(a, b)")


def _call_fields(text, name, names):
    """The arguments of the call `name(...)` that `text` is, by field name (positional ones in the
    order of `names`), from its syntax tree; anything but such a call is rejected."""
    if len(text) > MAX_TEXT:
        raise GenotypeError(f"not a DARTS genotype: {len(text)} characters (at most {MAX_TEXT})")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise GenotypeError("not a DARTS genotype: the text does not parse") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == name):
        raise GenotypeError(f"not a DARTS genotype: expected {name}({', '.join(f'{n}=...' for n in names)})")
    if len(tree.args) > len(names):
        raise GenotypeError("not a DARTS genotype: too many arguments")
    fields = dict(zip(names, tree.args))
    for kw in tree.keywords:
        if kw.arg not in names or kw.arg in fields:
            raise GenotypeError(f"not a DARTS genotype: unexpected argument {kw.arg!r}")
        fields[kw.arg] = kw.value
    if set(fields) != set(names):
        raise GenotypeError(f"not a DARTS genotype: missing {', '.join(sorted(set(names) - set(fields)))}")
    return fields


def parse_darts_text(text):
    """Parse `Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)`
    from its syntax tree; nothing is evaluated, anything else is rejected."""
    fields = _call_fields(text, "Genotype", ("normal", "normal_concat", "reduce", "reduce_concat"))
    normal, reduce = _ops_list(fields["normal"]), _ops_list(fields["reduce"])
    normal = Cell(normal, _concat(fields["normal_concat"], 2 + len(normal)))
    reduce = Cell(reduce, _concat(fields["reduce_concat"], 2 + len(reduce)))
    return Genotype(normal, reduce).validate()


def compact_cell(nodes, concat=None, num_inputs=2):
    """A Cell from `nodes` (nodes[i]: the (op, input) pairs of state num_inputs + i) where some
    nodes may have no input: such a node is dropped with the ops that read it (which can leave
    later nodes without input too), and the states that remain are renumbered in order. The cell
    outputs the remaining states of `concat` (default: every remaining node). None if no node remains."""
    renamed, kept = {j: j for j in range(num_inputs)}, []
    for i, pairs in enumerate(nodes):
        pairs = tuple((op, renamed[j]) for op, j in pairs if j in renamed)
        if pairs:
            renamed[num_inputs + i] = num_inputs + len(kept)
            kept.append(pairs)
    if not kept:
        return None
    concat = range(num_inputs, num_inputs + len(nodes)) if concat is None else concat
    return Cell(tuple(kept), tuple(renamed[c] for c in concat if c in renamed), num_inputs)


def _triples(node, k):
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise GenotypeError(f"not a DARTS genotype: genes[{k}] must be a list of (op, node, input) triples")
    triples = []
    for item in node.elts:
        if not isinstance(item, ast.Tuple) or len(item.elts) != 3:
            raise GenotypeError(f"not a DARTS genotype: genes[{k}] holds an entry that is not (op, node, input)")
        op, to, j = (_literal(e, "an (op, node, input) entry") for e in item.elts)
        if not (isinstance(op, str) and isinstance(to, int) and isinstance(j, int)) or not 0 <= j < to:
            raise GenotypeError(f"not a DARTS genotype: genes[{k}] entry {(op, to, j)} is not "
                                "('op_name', node, input) with input < node")
        triples.append((op, to, j))
    return triples


def parse_nested_text(text):
    """Parse the per-cell text form `Genotype_nested(genes=[[('op', node, input), ...], ...],
    concat=range(2, 6), reductions=[...])`, one gene list per layer, as published in other
    repositories. The network that reads this form sums each node's ops, skips a node no op
    writes together with the ops that read it, and outputs the nodes that remain: `compact_cell`."""
    fields = _call_fields(text, "Genotype_nested", ("genes", "concat", "reductions"))
    if not isinstance(fields["genes"], (ast.List, ast.Tuple)) or not fields["genes"].elts:
        raise GenotypeError("not a DARTS genotype: genes must be a non-empty list of per-layer lists")
    genes = [_triples(gene, k) for k, gene in enumerate(fields["genes"].elts)]
    states = 1 + max(to for triples in genes for _, to, _ in triples) if any(genes) else 2
    concat = _concat(fields["concat"], states)
    cells = []
    for k, triples in enumerate(genes):
        nodes = [[] for _ in range(max([to for _, to, _ in triples], default=1) - 1)]
        for op, to, j in triples:
            nodes[to - 2].append((op, j))
        cell = compact_cell(nodes, concat)
        if cell is None:
            raise GenotypeError(f"not a DARTS genotype: genes[{k}] has no op")
        cells.append(cell)
    return Genotype(cells=tuple(cells), reductions=_concat(fields["reductions"], len(cells), "reductions")).validate()


def parse_text(text):
    """The text forms: DARTS `Genotype(...)`, per-cell `Genotype_nested(...)`, NAS-Bench-201 `|op~0|+...`."""
    text = text.strip()
    if text.startswith("Genotype_nested("):
        return parse_nested_text(text)
    if text.startswith("|"):
        return Genotype(normal=parse_nb201(text))
    return parse_darts_text(text)


def to_darts_text(g):
    def flat(c):
        return "[" + ", ".join(f"('{op}', {j})" for node in c.nodes for op, j in node) + "]"
    return (f"Genotype(normal={flat(g.normal)}, normal_concat={list(g.normal.concat)}, "
            f"reduce={flat(g.reduce)}, reduce_concat={list(g.reduce.concat)})")


def parse_nb201(text):
    """`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` -> a single-input cell whose output is the last node."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise GenotypeError(f"not a NAS-Bench-201 string: {_short(text)}")
    nodes = []
    for part in text.strip().split("+"):
        if not (part.startswith("|") and part.endswith("|")) or len(part) < 3:
            raise GenotypeError(f"not a NAS-Bench-201 string: {_short(text)}")
        node = []
        for item in part[1:-1].split("|"):
            op, sep, j = item.partition("~")
            if not sep or not j.isdigit() or not j.isascii():
                raise GenotypeError(f"not a NAS-Bench-201 string: bad entry {_short(item)}")
            node.append((op, int(j)))
        nodes.append(tuple(node))
    cell = Cell(tuple(nodes), (len(nodes),), num_inputs=1)
    cell.validate(NB201_OPS, "nb201 cell")
    return cell


def to_nb201_string(cell):
    return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in cell.nodes)


# ---------------------------------------------------------------- published genotypes

# The cells every method compares with. A method's own published cells live beside it, in
# `<method folder>/published.json` (see `published()`).
PUBLISHED = {
    # DARTS (Liu et al., 2019), first and second order, from the authors' genotypes.py.
    "DARTS_V1": "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
                "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
                "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
    "DARTS_V2": "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
                "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
                "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
                "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",
    # PC-DARTS (Xu et al., 2020), searched on CIFAR-10 and on ImageNet, from the authors' genotypes.py.
    "PC_DARTS_cifar": "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), "
                      "('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), "
                      "('dil_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), "
                      "('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), "
                      "('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))",
    "PC_DARTS_image": "Genotype(normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), "
                      "('skip_connect', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), "
                      "('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('sep_conv_3x3', 0), "
                      "('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 1), ('sep_conv_3x3', 2), "
                      "('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)], reduce_concat=range(2, 6))",
}


@functools.lru_cache(maxsize=None)
def published():
    """Every published genotype by name: `PUBLISHED` above, and the entries of each method folder's
    `published.json` beside `common/` ({name: {"genotype": DARTS text or genotype JSON, "source":
    where it was published, ...}}, or {name: {"alias": other name}}). Values: (genotype, source)."""
    entries = {name: {"genotype": text, "source": "common/genotypes.py"} for name, text in PUBLISHED.items()}
    for path in sorted(Path(__file__).resolve().parents[1].glob("*/published.json")):
        for name, entry in json.loads(path.read_text()).items():
            if name in entries:
                raise GenotypeError(f"{path}: the published name {name!r} is defined twice")
            entries[name] = {**entry, "source": entry.get("source", str(path.parent.name))}
    out = {}
    for name, entry in entries.items():
        target = entry
        while "alias" in target:
            target = entries[target["alias"]]
        g = target["genotype"]
        g = parse_text(g) if isinstance(g, str) else from_dict(g)
        source = entry["source"] if "alias" not in entry else f"= {entry['alias']}"
        out[name] = (g, source)
    return out


def load(arch):
    """A published name, a JSON file, a text form (`parse_text`) or a file holding one, or
    `random:SPACE:SEED` (the cells `random_genotype(SPACE, SEED)` draws)."""
    arch = str(arch).strip()
    if arch in published():
        return published()[arch][0]
    if arch.startswith("random:"):
        _, space, seed = (arch.split(":") + ["", ""])[:3]
        if not seed.isdigit() or arch.count(":") != 2:
            raise GenotypeError(f"{_short(arch)}: a random cell is random:SPACE:SEED, e.g. random:darts:0")
        return random_genotype(space, int(seed))
    if arch.startswith(("Genotype(", "Genotype_nested(", "|")):
        return parse_text(arch)
    path = Path(arch) if len(arch) < 4096 else None
    if path is None or not path.is_file():
        raise GenotypeError(f"{_short(arch)} is neither a published genotype (python -m common.genotypes list), "
                            "a file, a Genotype(...) / Genotype_nested(...) text, a NAS-Bench-201 string "
                            "nor random:SPACE:SEED")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise GenotypeError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e.reason})") from None
    try:
        if text.lstrip().startswith(("Genotype(", "Genotype_nested(", "|")):  # a text form saved to a file
            return parse_text(text)
        d = json.loads(text)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise GenotypeError(f"{path}: not valid JSON ({' '.join(str(e).split())[:100]})") from None
    try:
        return from_dict(d)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from None


# ---------------------------------------------------------------- derivation

def derive_darts(weights, edge_ops, steps=4, num_inputs=2, k=2):
    """The DARTS rule (Liu et al., 2019, Sec. 2.4): per node, the `k` input edges with the largest
    non-`none` weight, strongest first (as DARTS' genotype() lists them); on each, the arg-max
    non-`none` op. `weights[e][o]` is the weight of op o on edge e (edges ordered node by node,
    inputs in order); `edge_ops[e]` names the ops of edge e. Ties keep the lower index."""
    nodes, e = [], 0
    for i in range(steps):
        n_in = num_inputs + i
        best = []
        for j in range(n_in):
            w, ops = [float(x) for x in weights[e + j]], edge_ops[e + j]
            cand = [o for o in range(len(ops)) if ops[o] != "none"]
            o = max(cand, key=lambda o: (w[o], -o))
            best.append((w[o], j, ops[o]))
        chosen = sorted(best, key=lambda t: (-t[0], t[1]))[:k]
        nodes.append(tuple((op, j) for _, j, op in chosen))
        e += n_in
    return Cell(tuple(nodes), tuple(range(num_inputs, num_inputs + steps)), num_inputs)


# ---------------------------------------------------------------- random cells

def random_genotype(space, seed, steps=None):
    """Cells drawn uniformly from a search space (`common.operations.SPACES` name or object), the
    same draw for the same seed on every machine (Python's `random`, not torch's global state).

    DARTS-like spaces: the random-search baseline of DARTS (Liu et al., 2019, Table 1), drawn as the random
    search code of Li & Talwalkar (2019) draws it: in the normal and the reduction cell, each of
    `steps` (4) nodes takes 2 distinct inputs among the states before it and, on each, one op of
    that edge's candidates drawn uniformly; unlike that code, `none` is left out, as the DARTS
    derivation leaves it out (no derived cell holds it). NAS-Bench-201: one of the 5 ops, `none`
    included, on each of the 6 edges of its 3-node cell."""
    from common.operations import get_space
    try:
        space = get_space(space) if isinstance(space, str) else space
    except ValueError as e:
        raise GenotypeError(str(e)) from None
    rng = random.Random(seed)
    if space.nb201:
        nodes = tuple(tuple((rng.choice(space.ops(False, 0)), j) for j in range(i + 1)) for i in range(steps or 3))
        return Genotype(normal=Cell(nodes, (len(nodes),), num_inputs=1)).validate()

    def cell(reduction):
        nodes, edge = [], 0  # edges are numbered node by node, inputs in order (as in DARTS' alphas)
        for i in range(steps or 4):
            inputs = sorted(rng.sample(range(2 + i), 2))
            nodes.append(tuple((rng.choice([op for op in space.ops(reduction, edge + j) if op != "none"]), j)
                               for j in inputs))
            edge += 2 + i
        return Cell(tuple(nodes), tuple(range(2, 2 + len(nodes))))
    return Genotype(cell(False), cell(True)).validate()


# ---------------------------------------------------------------- drawing

def _cell_dot(cell, name, indent="  "):
    def state(s):
        if cell.num_inputs == 1:
            return f'"{name}:in"' if s == 0 else f'"{name}:{s}"'
        return f'"{name}:c_{{k-{2 - s}}}"' if s < 2 else f'"{name}:{s - 2}"'
    lines = [f'{indent}{state(s)} [label="{state(s)[len(name) + 2:-1]}", fillcolor=lightblue];'
             for s in range(cell.num_inputs)]
    lines += [f'{indent}{state(s)} [label="{state(s)[len(name) + 2:-1]}", fillcolor=gray90];'
              for s in range(cell.num_inputs, cell.num_states)]
    lines += [f'{indent}{state(j)} -> {state(cell.num_inputs + i)} [label="{op}"];'
              for i, op, j in cell.pairs()]
    out = f'"{name}:out"'
    lines.append(f'{indent}{out} [label="{"c_{k}" if cell.num_inputs == 2 else "out"}", fillcolor=palegoldenrod];')
    lines += [f"{indent}{state(c)} -> {out};" for c in cell.concat]
    return lines


def to_dot(g, title="genotype"):
    """Graphviz DOT source with one cluster per cell."""
    lines = [f'digraph "{title}" {{', "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname=Helvetica];',
             "  edge [fontname=Helvetica, fontsize=10];"]
    for name, cell in g.named_cells():
        lines += [f'  subgraph "cluster_{name}" {{', f'    label="{name}";']
        lines += _cell_dot(cell, name, "    ") + ["  }"]
    return "\n".join(lines + ["}"]) + "\n"


def _graphviz(dot_path, out):
    """Render a DOT file with Graphviz' `dot` program into `out` (its format from the suffix);
    False when the program is not installed or fails."""
    return bool(shutil.which("dot")) and subprocess.run(
        ["dot", f"-T{Path(out).suffix[1:]}", str(dot_path), "-o", str(out)], capture_output=True).returncode == 0


def export(folder, g, stem="genotype", **meta):
    """Write `stem`.json (with `meta`) and `stem`.dot into `folder`; render `stem`.svg and
    `stem`.png too when Graphviz' `dot` program is installed (`draw` makes a picture without it).
    Returns the files written."""
    folder = Path(folder)
    save(folder / f"{stem}.json", g, **meta)
    dot_path = folder / f"{stem}.dot"
    dot_path.write_text(to_dot(g, stem))
    pictures = [folder / f"{stem}.{fmt}" for fmt in ("svg", "png")]
    return [folder / f"{stem}.json", dot_path, *(p for p in pictures if _graphviz(dot_path, p))]


def draw(g, path, title=""):
    """A picture of every cell of `g` in PATH (.png or .svg): Graphviz' `dot` when it is installed,
    else matplotlib (`common.drawing`); None when neither is, else PATH."""
    path = Path(path)
    if shutil.which("dot"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            dot_path = Path(tmp) / "cells.dot"
            dot_path.write_text(to_dot(g, title or path.stem))
            if _graphviz(dot_path, path):
                return path
    from common import drawing
    return drawing.draw(g, path, title) if drawing.available() else None


# ---------------------------------------------------------------- CLI

def main(argv=None):
    from common.network import build_network
    from common.utils import count_madds, count_madds_thop, count_params, die

    parser = argparse.ArgumentParser(prog="python -m common.genotypes", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    show = sub.add_parser("show", help="print a genotype with its parameters and multiply-adds (conv + fc, and thop's)")
    show.add_argument("arch", help="published name, JSON file, DARTS text or NAS-Bench-201 string")
    show.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "svhn", "imagenet"])
    show.add_argument("--layers", type=int, default=None, help="default: 20 on CIFAR, 14 on ImageNet")
    show.add_argument("--init_channels", type=int, default=None, help="default: 36 on CIFAR, 48 on ImageNet")
    show.add_argument("--dot", default=None, help="also write the cells as Graphviz DOT to this file")
    show.add_argument("--draw", default=None, metavar="FILE",
                      help="also draw the cells into FILE (.png or .svg): Graphviz when installed, else matplotlib")
    sub.add_parser("list", help="every published genotype by name, with where it was published")
    args = parser.parse_args(argv)
    if args.cmd == "list":
        try:
            names = published()
        except GenotypeError as e:
            die(str(e))
        width = max(map(len, names))
        for name, (_, source) in names.items():
            print(f"{name:{width}}  {source}")
        return
    if args.draw and Path(args.draw).suffix not in (".png", ".svg"):
        die(f"--draw {args.draw}: the picture's name must end in .png or .svg")
    try:
        g = load(args.arch)
    except GenotypeError as e:
        die(str(e))
    imagenet = args.dataset == "imagenet"
    layers = args.layers or (len(g.cells) if g.kind == "per_cell" else 14 if imagenet else 20)
    C = args.init_channels or (16 if g.kind == "nb201" else 48 if imagenet else 36)
    num_classes = {"cifar10": 10, "cifar100": 100, "svhn": 10, "imagenet": 1000}[args.dataset]
    try:
        model = build_network(g, args.dataset, C, layers, num_classes, auxiliary=False)
    except GenotypeError as e:
        die(str(e))
    size = 224 if imagenet else 32
    print(g)
    if args.dot:
        Path(args.dot).write_text(to_dot(g, Path(args.arch).stem))
    if args.draw and draw(g, args.draw, Path(args.arch).stem) is None:
        die(f"--draw {args.draw}: install matplotlib (pip install -e \".[reproduce]\") or Graphviz to draw cells")
    print(json.dumps({"kind": g.kind, "dataset": args.dataset, "layers": layers, "init_channels": C,
                      "params_M": round(count_params(model), 4),
                      "mult_adds_M": round(count_madds(model, (1, 3, size, size)), 2),
                      "mult_adds_thop_M": round(count_madds_thop(model, (1, 3, size, size)), 2)}))


if __name__ == "__main__":
    sys.exit(main())
