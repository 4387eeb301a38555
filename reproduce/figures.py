"""The papers' quantitative figures, drawn from what a reproduction measured (matplotlib, the
optional extra `pip install -e ".[reproduce]"`; without it the figures' numbers are still in
summary.json).

  points  each row of the figure is one point: x is one of the row's coordinates (`Row.x`) or, when
          the row has no such coordinate, one of its reported numbers (parameters, multiply-adds),
          y one of its reported numbers (test error, search GPU-hours, a measurement); the paper's
          values, where it prints them, are drawn beside ours.
  curves  one curve per row: a metrics.jsonl key per epoch of the row's searches (or, with
          `curves_of="steps"`, of their post-search steps), the mean over seeds, or with `running`
          each search's best value so far.
  edges   one panel per analysed edge (DARTS-PT's Figs. 1, 2, 7): softmax(alpha) and the discretization
          accuracy at convergence of each op (points: (op, accuracy, alpha)), from the strength.json of
          the rows' measurements (darts_pt/analysis.py strength); the op each of them picks is in the
          panel's title.
"""
import itertools
import json
from pathlib import Path


# A row's number in paper_results.json that stands for each y of ours.
PAPER_KEYS = {"test_error": lambda p: p.get("test_error"), "params_M": lambda p: p.get("params_M"),
              "mult_adds_M": lambda p: p.get("mult_adds_M"),
              "search_gpu_hours": lambda p: p["search_cost_gpu_days"] * 24 if p.get("search_cost_gpu_days") else None}


def figure_data(fig, results, out, parts_of, paper=None):
    """The numbers of one figure: {"series": [{"label", "y_name", "points", "paper"}]};
    `results[key]` are the rows' reported numbers (reproduce.summary.row_results), `parts_of[key]`
    their stages, `paper[key]` their entries in paper_results.json."""
    series, paper = [], paper or {}

    def paper_value(row, y):
        if (row.row, y) in fig.paper_values:
            return fig.paper_values[(row.row, y)]
        entry = paper.get(row.key)
        return PAPER_KEYS[y](entry) if entry and y in PAPER_KEYS else None

    def ours(row, key):
        r = results.get(row.key)
        return None if r is None else r.get(key, r.get("measures", {}).get(key))

    def x_of(row, value):
        return row.x[fig.xkey] if fig.xkey in row.x else value(row, fig.xkey)

    if fig.kind == "points":  # one series per `x["series"]` of the rows (one series if none)
        groups = {}
        for row in fig.rows:
            groups.setdefault(row.x.get("series", "ours"), []).append(row)
        for y in fig.y:
            for label, rows in groups.items():
                pts = [(x_of(row, ours), ours(row, y), row.row) for row in rows]
                series.append({"label": f"{label}: {y}", "y_name": y, "points": pts,
                               "paper": [(x_of(row, paper_value), paper_value(row, y), row.row) for row in rows
                                         if paper_value(row, y) is not None]})
    elif fig.kind == "curves":
        for row in fig.rows:
            parts = parts_of.get(row.key)
            if parts is None:
                continue
            for y in fig.y:
                curves = [_curve(Path(out) / s / "metrics.jsonl", fig.xkey, y, fig.running)
                          for s in parts[fig.curves_of]]
                curves = [c for c in curves if c]
                if curves:
                    n = min(len(c) for c in curves)
                    points = [(curves[0][i][0], sum(c[i][1] for c in curves) / len(curves)) for i in range(n)]
                    name = f"{y} (running {fig.running})" if fig.running else y
                    series.append({"label": f"{row.row}: {name}", "y_name": name, "points": points,
                                   "runs": len(curves)})
    elif fig.kind == "edges":
        for row in fig.rows:
            for m in (parts_of.get(row.key) or {}).get("measures", []):
                try:
                    edges = json.loads((Path(out) / m / "strength.json").read_text())
                except (OSError, ValueError):
                    continue
                for e in edges:
                    series.append({"label": f"{row.row}: {e['cell']} edge {e['name']}", "y_name": "valid_top1",
                                   "points": [(op, acc, alpha) for op, acc, alpha in
                                              zip(e["ops"], e["valid_top1"], e["alpha"]) if acc is not None],
                                   "alpha_choice": e.get("alpha_choice"), "accuracy_choice": e.get("accuracy_choice")})
    else:
        raise ValueError(f"unknown figure kind {fig.kind!r}")
    return {"paper": fig.paper, "figure": fig.figure, "title": fig.title, "kind": fig.kind, "x": fig.xkey,
            "series": series}


def _curve(path, xkey, ykey, running=""):
    if not path.exists():
        return []
    pts = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get(ykey) is not None:
            pts.append((r.get(xkey), r[ykey]))
    if running and pts:  # the best value so far at each epoch
        best = itertools.accumulate((y for _, y in pts), {"max": max, "min": min}[running])
        pts = [(x, b) for (x, _), b in zip(pts, best)]
    return pts


def draw(data, path):
    """Draw one figure's numbers into a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if data["kind"] == "edges":
        return _draw_edges(data, path, plt)
    names = sorted({s["y_name"] for s in data["series"]})
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.5 * max(len(names), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for s in (s for s in data["series"] if s["y_name"] == name):
            pts = [(x, y) for x, y, *_ in s["points"] if x is not None and y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=s["label"])
            paper = [(x, y) for x, y, *_ in s.get("paper", []) if x is not None and y is not None]
            if paper:
                ax.plot(*zip(*paper), marker="s", linestyle="--", label=s["label"].replace(name, "paper"))
        ax.set_xlabel(data["x"])
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _save(fig, data, path, plt)


def _draw_edges(data, path, plt):
    """One panel per edge: softmax(alpha) (left axis) and the accuracy (right axis) of each op as bars."""
    edges = data["series"]
    cols = min(len(edges), 4) or 1
    rows = max(1, -(-len(edges) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.2 * cols, 6.5), 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(edges):]:
        ax.axis("off")
    for ax, e in zip(axes.flat, edges):
        ops, accuracy, alpha = zip(*e["points"]) if e["points"] else ((), (), ())
        x = range(len(ops))
        ax.bar([i - 0.2 for i in x], alpha, 0.4, color="tab:blue")
        ax.set_ylabel("softmax(α)", color="tab:blue")
        acc = ax.twinx()
        acc.bar([i + 0.2 for i in x], accuracy, 0.4, color="tab:orange")
        acc.set_ylabel("valid top-1 (%)", color="tab:orange")
        ax.set_xticks(list(x), ops, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{e['label']}\nα picks {e['alpha_choice']}, accuracy picks {e['accuracy_choice']}", fontsize=7)
    return _save(fig, data, path, plt)


def _save(fig, data, path, plt):
    """Title the figure with the paper's figure, write it as PNG and close it."""
    fig.suptitle(f"{data['paper']} {data['figure']}: {data['title']}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
