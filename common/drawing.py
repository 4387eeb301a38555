"""Pictures of cells without the Graphviz program: every cell of a genotype drawn with matplotlib
(the optional extra `pip install -e ".[reproduce]"`), as PNG or SVG.

A cell reads left to right as in the DARTS paper's figures: its inputs (c_{k-2} above, c_{k-1}
below; `in` for a NAS-Bench-201 cell) in the first column, its intermediate nodes one column each
in the order of their states, its output last (c_{k}, the concatenation of `concat`, dashed
arrows; `out` for NAS-Bench-201). Each (op, input) pair of the genotype is one arrow labelled with
its op and coloured by its kind; an arrow that skips columns bows around the nodes in between, and
the ops of one edge (several with D-DARTS' edge parsing) fan out. A genotype with one cell per
layer is drawn as a column of its cells, the reductions named.

`common.genotypes.draw` chooses between Graphviz and this module.
"""
from pathlib import Path

# the colour of an op, by the first of these words in its name
COLOURS = (("conv", "tab:blue"), ("pool", "tab:green"), ("skip", "tab:orange"), ("none", "0.5"), ("noise", "0.5"))
NODE_RADIUS = 0.2  # where the arrows stop short of a node's centre, in data units
INPUT_Y = 1.3  # c_{k-2} at +INPUT_Y, c_{k-1} at -INPUT_Y; every other node on y = 0


def available():
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def colour(op):
    return next((c for key, c in COLOURS if key in op), "black")


def state_label(cell, s):
    """The name of state `s` as the DARTS paper writes it: c_{k-2}, c_{k-1}, 0, 1, ... (in, 1, 2, ...
    in a NAS-Bench-201 cell), in matplotlib's mathtext."""
    if cell.num_inputs == 1:
        return "in" if s == 0 else str(s)
    return f"$c_{{k-{2 - s}}}$" if s < 2 else str(s - 2)


def positions(cell):
    """(x, y) of every state and of the output "out"."""
    pos = {s: (0.0, 0.0 if cell.num_inputs == 1 else INPUT_Y * (1 - 2 * s)) for s in range(cell.num_inputs)}
    pos.update({cell.num_inputs + i: (float(i + 1), 0.0) for i in range(len(cell.nodes))})
    pos["out"] = (float(len(cell.nodes) + 1), 0.0)
    return pos


def curve(pos, a, b, k=0):
    """The k-th arrow from state a to state b as a quadratic Bezier curve (start, control, end),
    cut NODE_RADIUS short of both centres. Between neighbours the first arrow is straight; one that
    skips columns bows around the nodes in between: its control point 0.6 per column skipped off
    the chord when it starts on the line of the nodes (its middle passes 0.3 above or below the
    nearest one), 0.25 when it starts at an input (the chord already runs clear); up from the upper
    input and from every other node, down from the rest. Every further arrow of the same edge bows
    0.45 further, so that its label (the curve's middle) sits 0.22 away from the previous one."""
    (x0, y0), (x1, y1) = pos[a], pos[b]
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    up = y0 > 0 or (y0 == 0 and (a if isinstance(a, int) else 0) % 2 == 0)
    height = (0.6 if y0 == 0 else 0.25) * max(x1 - x0 - 1, 0) + 0.45 * k  # the control point's distance off the chord
    nx, ny = -(y1 - y0) / length, (x1 - x0) / length  # the chord's left normal: up for a rightward arrow
    sign = 1 if up else -1
    cx, cy = (x0 + x1) / 2 + sign * height * nx, (y0 + y1) / 2 + sign * height * ny

    def cut(px, py):  # move an end NODE_RADIUS towards the control point
        d = ((cx - px) ** 2 + (cy - py) ** 2) ** 0.5
        return px + NODE_RADIUS * (cx - px) / d, py + NODE_RADIUS * (cy - py) / d
    return cut(x0, y0), (cx, cy), cut(x1, y1)


def arrows(cell):
    """(input, node, op, curve) for every (op, input) pair of `cell`, in order."""
    pos, seen, out = positions(cell), {}, []
    for i, op, j in cell.pairs():
        node = cell.num_inputs + i
        k = seen[(j, node)] = seen.get((j, node), -1) + 1
        out.append((j, node, op, curve(pos, j, node, k)))
    return out


def midpoint(bezier):
    """The point of a quadratic Bezier curve at t = 1/2, where its label goes."""
    (x0, y0), (cx, cy), (x1, y1) = bezier
    return (x0 + 2 * cx + x1) / 4, (y0 + 2 * cy + y1) / 4


def draw_cell(ax, cell, title):
    """One cell into the matplotlib axes `ax`."""
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MPath

    def arrow(bezier, **style):
        ax.add_patch(FancyArrowPatch(path=MPath(bezier, [MPath.MOVETO, MPath.CURVE3, MPath.CURVE3]),
                                     arrowstyle="-|>", mutation_scale=9, **style))

    pos = positions(cell)
    for _, _, op, bezier in arrows(cell):
        arrow(bezier, color=colour(op), lw=1.2)
        ax.text(*midpoint(bezier), op, fontsize=7, ha="center", va="center", color=colour(op), zorder=3,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9))
    for s in cell.concat:
        arrow(curve(pos, s, "out"), color="0.6", lw=0.8, ls="--")
    for s in range(cell.num_states):
        ax.text(*pos[s], state_label(cell, s), ha="center", va="center", fontsize=9, zorder=4,
                bbox=dict(boxstyle="round,pad=0.35", fc="lightblue" if s < cell.num_inputs else "0.92", ec="0.3"))
    ax.text(*pos["out"], "$c_{k}$" if cell.num_inputs == 2 else "out", ha="center", va="center", fontsize=9,
            zorder=4, bbox=dict(boxstyle="round,pad=0.35", fc="palegoldenrod", ec="0.3"))
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.5, len(cell.nodes) + 1.5)
    ax.set_ylim(-INPUT_Y - 0.5, INPUT_Y + 0.5)
    ax.set_axis_off()


def draw(g, path, title=""):
    """Every cell of genotype `g` into PATH (.png or .svg, from its suffix), one below the other;
    returns PATH. Raises ImportError without matplotlib. Uses matplotlib's object interface (no
    pyplot, no display); an SVG keeps its labels as text (searchable, selectable)."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    cells = g.named_cells()
    width = 1.5 * (max(len(c.nodes) for _, c in cells) + 2)  # 1.5 inches a column: an op's name fits
    fig = Figure(figsize=(width, 2.4 * len(cells) + (0.3 if title else 0)), layout="constrained")
    for k, (name, cell) in enumerate(cells):
        draw_cell(fig.add_subplot(len(cells), 1, k + 1), cell, name.replace("_", " "))
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(path, dpi=100)
    return path
