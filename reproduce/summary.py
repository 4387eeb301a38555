"""The results of a reproduction, laid out like the papers' tables, ours beside theirs.

Reads OUT/plan.json (written by `python -m reproduce` before the first stage) and whatever stages
have finished, and writes OUT/summary.md and OUT/summary.json: one table per paper table, its rows
in the paper's order (the baselines the paper compares with, as printed), and for each of our rows
the test error (mean ± sample std over its trainings, and the best; top-5 on ImageNet or where
the paper prints it), parameters and multiply-adds (mean ± sample std over the trainings), search
cost and memory measured on this run, the rule that chose its architecture, the numbers of its
measurements and the cells it trained, drawn under the table (OUT/cells/, with Graphviz or
matplotlib); then the figures (PNG, with matplotlib). A table the paper prints as a grid, whose rows
are labelled "line: column" (DARTS-PT's Tables 3 and 4: one line per space and dataset, one column per
method), is laid out as that grid in summary.md. It can run at any time: unfinished rows show what is
done so far.

Usage: python -m reproduce.summary OUT
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import genotypes
from reproduce import figures as figures_mod
from reproduce.experiments import EXPERIMENTS
from reproduce.registry import Figure, row_stages
from reproduce.select import final_value, read_json

PAPER = Path(__file__).with_name("paper_results.json")
PAPERS = ("msg_das", "entrannas", "darts_pt", "darts_pd", "d_darts", "baselines")
# the numbers of common.search.search_cost in a measurement's summary.json: its own cost, not what it measured
COST = ("search_time_s", "world_size", "gpu_hours", "peak_memory_MB")


def paper_results():
    return json.loads(PAPER.read_text())


def table_of(source):
    """'Table 2 (reconstructed)' -> 'Table 2'; 'Fig. 3 / Sec. 4.5' -> 'Fig. 3'."""
    words = source.replace("/", " ").replace("(", " ").split()
    for i, w in enumerate(words[:-1]):
        if w in ("Table", "Fig.", "Sec.", "App."):
            return f"{w} {words[i + 1]}"
    return source


def search_cost(out, names, marker):
    """Wall time, GPU-hours and peak GPU memory of the stages `names` (a search and its steps), from
    their done-markers (`marker`: {name: file}, summary.json where not named)."""
    stages = [s for s in (read_json(Path(out) / n / marker.get(n, "summary.json")) for n in names)
              if s and "search_time_s" in s]
    gpu = [s["gpu_hours"] for s in stages if s.get("gpu_hours") is not None]
    mem = [s["peak_memory_MB"] for s in stages if s.get("peak_memory_MB") is not None]
    return {"hours": sum(s["search_time_s"] for s in stages) / 3600 if stages else None,
            "gpu_hours": sum(gpu) if gpu else None, "peak_memory_MB": max(mem) if mem else None,
            "devices": sorted({s.get("device", "?").split(":")[0] for s in stages})}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _std(xs):
    """The sample std (n - 1), as the papers print their ±; None below two values."""
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else None


def logged(out, parts, marker):
    """The numbers the row's finished searches logged (`Row.logged`), each the mean over them."""
    finished = [out / n for n in parts["searches"] if (out / n / marker.get(n, "summary.json")).exists()]
    values = {k: [v for v in (final_value(f, k) for f in finished) if v != -math.inf] for k in parts.get("logged", ())}
    return {k: sum(v) / len(v) for k, v in values.items() if v}


def row_results(out, parts, stages):
    """Our numbers for one row, from the summary.json of its finished stages."""
    out = Path(out)
    marker = {s["name"]: s.get("done", "summary.json") for s in stages}  # each stage's done-marker
    trainings = [(n, read_json(out / n / "summary.json")) for n in parts["trainings"]]
    done = [s for _, s in trainings if s and s.get("final_top1") is not None]
    errors = [100 - s["final_top1"] for s in done]
    top5 = [100 - s["final_top5"] for s in done if s.get("final_top5") is not None]
    searches = []  # each searched architecture: the search and its steps
    for name in parts["searches"]:
        steps = [s for s in parts["steps"] if s.startswith(name + "/")]
        searches.append(search_cost(out, [name, *steps], marker))
    select = read_json(out / parts["select"] / "summary.json") if parts.get("select") else None
    # the numbers the row reports (Measure.keys); a plan.json written before rows named them: all but the cost
    measures, keys = {}, parts.get("measured")
    for name in parts["measures"]:
        measures.update({k: v for k, v in (read_json(out / name / "summary.json") or {}).items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)
                         and (k in keys if keys else k not in COST)})
    measures.update(logged(out, parts, marker))
    mems = [s["peak_memory_MB"] for s in searches if s["peak_memory_MB"] is not None]
    return {
        "trainings": len(trainings), "finished": len(done),
        "datasets": sorted({s.get("dataset") for s in done}),
        # where the error is not the paper's own protocol's: read from a benchmark, or trained where the paper reads it
        "evaluated_by": sorted({s["evaluated_by"] for s in done if s.get("evaluated_by")}),
        "test_error": _mean(errors), "test_error_std": _std(errors),
        "test_error_best": min(errors) if errors else None, "top5_error": _mean(top5),
        "params_M": _mean([s.get("params_M") for s in done]), "params_M_std": _std([s.get("params_M") for s in done]),
        "mult_adds_M": _mean([s.get("mult_adds_M") for s in done]),
        "mult_adds_M_std": _std([s.get("mult_adds_M") for s in done]),
        "searches": len(searches), "searches_finished": sum(s["hours"] is not None for s in searches),
        "search_hours": _mean([s["hours"] for s in searches]),
        "search_gpu_hours": _mean([s["gpu_hours"] for s in searches]),
        "search_peak_memory_MB": max(mems) if mems else None,
        "devices": sorted({d for s in searches for d in s["devices"]}),
        "selected_by": select and {k: select.get(k) for k in ("rule", "key", "chosen", "value")},
        "measures": measures,
        "stages_done": sum((out / n / marker.get(n, "summary.json")).exists() for n in row_stages(parts)),
        "stages": len(row_stages(parts)),
        "cells": trained_cells(parts, stages),
    }


def trained_cells(parts, stages):
    """The genotypes a row's trainings train (their --arch), each once, in order, with the picture
    of their cells under OUT: {"arch", "genotype" (a file under OUT, or the name `load` takes),
    "picture"}. A searched genotype OUT/X/genotype.json is drawn into OUT/cells/X/genotype.png,
    a named one (DARTS_V2, random:darts:0) into OUT/cells/NAME.png."""
    argv = {s["name"]: s["argv"] for s in stages}
    cells = []
    for name in parts["trainings"]:
        given = argv.get(name, ())
        if "--arch" not in given:
            continue
        arch = given[given.index("--arch") + 1]
        if arch in (c["arch"] for c in cells):
            continue
        if arch.startswith("{out}/"):
            genotype = arch[len("{out}/"):]
            picture = f"cells/{Path(genotype).with_suffix('.png')}"
        else:
            genotype, picture = arch, "cells/" + "".join(c if c.isalnum() or c in "._-" else "-" for c in arch) + ".png"
        cells.append({"arch": arch, "genotype": genotype, "picture": picture,
                      "file": arch.startswith("{out}/")})
    return cells


def draw_cells(out, tables):
    """Draw every trained genotype whose picture is missing or older than its genotype file, once
    the stage that writes it is done (its summary.json, beside it); returns the pictures that
    exist. Nothing is drawn without Graphviz or matplotlib."""
    out, drawn = Path(out), set()
    for c in (c for t in tables for r in t["rows"] for c in (r["ours"] or {}).get("cells", [])):
        picture, source = out / c["picture"], out / c["genotype"] if c["file"] else None
        if source is not None and not (source.parent / "summary.json").exists():
            continue  # its stage has not finished
        if not picture.exists() or (source is not None and source.stat().st_mtime > picture.stat().st_mtime):
            try:
                if genotypes.draw(genotypes.load(source or c["genotype"]), picture, c["genotype"]) is None:
                    return drawn  # neither Graphviz nor matplotlib
            except genotypes.GenotypeError:
                continue
        drawn.add(c["picture"])
    return drawn


def summarize(out):
    """Every table of the papers in the plan: [{"paper", "table", "rows": [...]}], ours beside the
    paper's; and the figures' numbers."""
    out = Path(out)
    plan = read_json(out / "plan.json")
    if plan is None:
        raise FileNotFoundError(f"{out / 'plan.json'}: no plan here (run `bash run_all.sh --out {out}` first)")
    ours = {tuple(r["key"]): r for r in plan["rows"]}
    papers = {k[0] for k in ours}
    tables = {}
    for p in paper_results():
        key = (p["method"], p["row"], p["dataset"])
        if p["method"] not in papers:
            continue
        ours_row = ours.pop(key, None)
        tables.setdefault((p["method"], table_of(p["source"])), []).append(
            {"row": p["row"], "dataset": p["dataset"], "baseline": p["baseline"], "paper": p,
             "ours": ours_row and row_results(out, ours_row["parts"], plan["stages"])})
    for key, r in ours.items():  # rows the paper prints only in a figure, or not at all
        tables.setdefault((key[0], r["table"]), []).append(
            {"row": key[1], "dataset": key[2], "baseline": False, "paper": None,
             "ours": row_results(out, r["parts"], plan["stages"])})
    order = {p: i for i, p in enumerate(PAPERS)}
    tables = [{"paper": paper, "table": table, "rows": rows}
              for (paper, table), rows in sorted(tables.items(), key=lambda kv: (order.get(kv[0][0], 99), _num(kv[0][1])))]
    results = {(t["paper"], r["row"], r["dataset"]): r["ours"] for t in tables for r in t["rows"] if r["ours"]}
    parts = {tuple(r["key"]): r["parts"] for r in plan["rows"]}
    printed = {(p["method"], p["row"], p["dataset"]): p for p in paper_results()}
    figures = [figures_mod.figure_data(f, results, out, parts, printed) for f in EXPERIMENTS
               if isinstance(f, Figure) and f.paper in papers]
    return tables, figures


def _num(table):
    """Tables first, then sections, appendices and figures, each in their numbers' order."""
    kind, _, n = table.partition(" ")
    rank = {"Table": 0, "Sec.": 1, "App.": 2, "Fig.": 3}.get(kind, 4)
    try:
        return (rank, kind, float(n.rstrip(".").split(".")[0]), n)
    except ValueError:
        return (rank, kind, math.inf, n)


def _f(x, digits=2):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _err(mean, std, n=None, digits=2):
    s = _f(mean, digits) + (f" ± {_f(std, digits)}" if std is not None else "")
    return s + (f" ({n})" if n and mean is not None else "")


def _top5(d, shown):
    return f"; top-5 {_f(d['top5_error'])}" if shown and d.get("top5_error") is not None else ""


def _measured(ours, paper):
    """The measured numbers of a row: those the paper prints as `ours / paper`, else all of ours
    (counts as counts)."""
    def v(x):
        return str(x) if isinstance(x, int) else _f(x, 3)
    if paper:
        return ", ".join(f"{k} {v(ours.get(k))} / {v(x)}" for k, x in paper.items())
    return ", ".join(f"{k} {v(x)}" for k, x in ours.items())


def figure_file(data):
    slug = "".join(c if c.isalnum() else "-" for c in data["figure"]).strip("-").lower()
    return f"figures/{data['paper']}-{slug}.png"


def _errors(r):
    """Our test error of a row (mean ± std (n); top-5 on ImageNet or where the paper prints it; "" where we
    have no row) and the paper's."""
    o, p = r["ours"], r["paper"] or {}
    top5 = r["dataset"] == "imagenet" or p.get("top5_error") is not None
    ours = _err(o.get("test_error"), o.get("test_error_std"), o.get("finished")) + _top5(o, top5) if o else ""
    return ours, _err(p.get("test_error"), p.get("test_error_std")) + _top5(p, top5)


def _columns(r, paper, pictures):
    """One row of a flat table: {column header: value}; `paper`: whether the table has the paper's numbers."""
    def both(ours, theirs):  # "ours / paper", or ours alone in a table without the paper's numbers
        return f"{ours} / {theirs}" if paper else ours
    o, p = r["ours"] or {}, r["paper"] or {}
    ours, theirs = _errors(r)
    cost = _f(o.get("search_gpu_hours"), 3) + " GPU-h" if o.get("search_gpu_hours") is not None else \
        (_f(o.get("search_hours"), 3) + f" h ({','.join(o['devices'])})" if o.get("search_hours") else "–")
    sel = o.get("selected_by") or {}
    values = {"row": f"{r['row']}{' (baseline)' if r['baseline'] else ''}", "dataset": r["dataset"],
              "ours: error %" if paper else "test error %": ours, "best": _f(o.get("test_error_best")) if o else ""}
    if paper:
        values["paper: error %"] = theirs
    return {**values,
            "params M (ours / paper)" if paper else "params M": both(
                _err(o.get("params_M"), o.get("params_M_std")), _err(p.get("params_M"), p.get("params_M_std"))),
            "M-adds (ours / paper)" if paper else "M-adds": both(
                _err(o.get("mult_adds_M"), o.get("mult_adds_M_std"), digits=0),
                _err(p.get("mult_adds_M"), p.get("mult_adds_M_std"), digits=0)),
            "search cost (ours / paper GPU-days)" if paper else "search cost": both(
                cost, _f(p.get("search_cost_gpu_days"))),
            "memory (ours MB / paper GB)" if paper else "memory MB": both(
                _f(o.get("search_peak_memory_MB"), 0), _f(p.get("search_memory_GB"), 1)),
            "chosen by": f"{sel['rule']} ({sel['key']} {_f(sel['value'])})" if sel else ("each" if o else ""),
            "measured": ", ".join(x for x in (*(f"error from {b}" for b in o.get("evaluated_by", [])),
                                              _measured(o.get("measures") or {}, p.get("metrics") or {})) if x),
            "cells": " ".join(_cell_link(c, pictures) for c in o.get("cells", []))}


def _table(header, rows):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(v) + " |" for v in rows)]


def grid(rows):
    """The paper's grid of a table whose rows are labelled "LINE: COLUMN" (DARTS-PT Tables 3, 4: one line
    per space and dataset, one column per method): ([(line, dataset)], [column], {(line, dataset, column):
    row}), in the order of the rows; None unless every label has that form and every line has every
    column, once, with at least two lines and two columns."""
    if not all(": " in r["row"] for r in rows):
        return None
    cells = {}
    for r in rows:
        line, _, column = r["row"].partition(": ")
        cells[(line, r["dataset"], column)] = r
    lines, columns = list(dict.fromkeys(k[:2] for k in cells)), list(dict.fromkeys(k[2] for k in cells))
    if len(lines) < 2 or len(columns) < 2 or not len(rows) == len(cells) == len(lines) * len(columns):
        return None
    return lines, columns, cells


def _known(value):
    """Whether a cell of a table says something (not "", "–" or "– / –")."""
    return bool(value.replace("–", "").replace("/", "").strip())


def _grid_table(g, paper, pictures):
    """A table as its paper's grid (`grid`): each cell "ours / paper" ("–" where missing), then the other
    numbers of its rows (best, size, search cost, the rule that chose, measurements, cells), the rows and
    columns that have any."""
    lines, columns, cells = g

    def cell(r):
        ours, theirs = _errors(r)
        return f"{ours or '–'} / {theirs}" if paper else ours or "–"
    table = _table(["row", "dataset", *columns],
                   [[line, dataset, *(cell(cells[(line, dataset, c)]) for c in columns)] for line, dataset in lines])
    errors = ("ours: error %", "paper: error %", "test error %")
    detail = [{k: v for k, v in _columns(r, paper, pictures).items() if k not in errors} for r in cells.values()]
    detail = [d for d in detail if any(_known(v) for v in list(d.values())[2:])]  # beyond row and dataset
    if detail:
        header = ["row", "dataset", *(k for k in list(detail[0])[2:] if any(_known(d[k]) for d in detail))]
        table += ["", *_table(header, [[d[k] for k in header] for d in detail])]
    return table


def markdown(tables, figures=(), drawn=(), pictures=()):
    """summary.md: the tables (a table the paper prints as a grid, as a grid: `grid`), each followed by
    the pictures of the cells its rows trained (those in `pictures`), then the figures (those in `drawn`
    as images)."""
    lines = ["# Results beside the papers", "",
             "Each table is a table of a paper, in its order. **ours**: test error of the last epoch, mean ± sample "
             "std over the trainings that finished (how many in brackets; top-5 where the paper prints it), the "
             "best; parameters and multiply-adds of the evaluation network (± over the trainings); search cost "
             "per searched architecture (GPU-hours on GPUs, else hours on the device named) and peak GPU memory; "
             "the rule that chose the architecture; the numbers measured (ours / paper where the paper prints "
             "them; a test error read from a benchmark, or trained where the paper reads it from one, says so); "
             "the cells trained, drawn below the table. **paper**: as printed (search cost in GPU-days, memory in "
             "GB). A row without ours is a baseline the paper cites; a table without the paper's numbers has no "
             "paper columns. A table whose rows the paper prints as a grid (rows \"line: column\", DARTS-PT's "
             "Tables 3 and 4) is that grid, each cell ours / paper, followed by the other numbers of its rows.", ""]
    if not pictures and any((r["ours"] or {}).get("cells") for t in tables for r in t["rows"]):
        lines += ["The cells are not drawn: install matplotlib (`pip install -e \".[reproduce]\"`) or Graphviz "
                  "and run `python -m reproduce.summary OUT` again.", ""]
    for t in tables:
        paper = any(r["paper"] for r in t["rows"])
        lines += [f"## {t['paper']}: {t['table']}", ""]
        if g := grid(t["rows"]):
            lines += _grid_table(g, paper, pictures)
        else:
            values = [_columns(r, paper, pictures) for r in t["rows"]]
            lines += _table(list(values[0]), [list(v.values()) for v in values])
        lines.append("")
        for row, c in ((r["row"], c) for r in t["rows"] for c in (r["ours"] or {}).get("cells", [])):
            if c["picture"] in pictures:
                lines += [f"**{row}**, {_cell_name(c)}:", "", f"![{row}: {_cell_name(c)}]({c['picture']})", ""]
    for data in figures:
        lines += [f"## {data['paper']}: {data['figure']}, {data['title']}", ""]
        if figure_file(data) in drawn:
            lines += [f"![{data['paper']} {data['figure']}]({figure_file(data)})", ""]
        for s in data["series"]:
            pts = ", ".join(f"{x}: {_f(y, 3)}" for x, y, *_ in s["points"])
            lines.append(f"- {s['label']}: {pts or 'nothing finished yet'}")
        lines.append("")
    return "\n".join(lines)


def _cell_name(cell):
    """A trained genotype as the summary names it: its stage folder, or its name."""
    return str(Path(cell["genotype"]).parent) if cell["file"] else cell["genotype"]


def _cell_link(cell, pictures):
    """Its picture when drawn, else its genotype file, else its name."""
    target = cell["picture"] if cell["picture"] in pictures else cell["genotype"] if cell["file"] else None
    return f"[{_cell_name(cell)}]({target})" if target else _cell_name(cell)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="the OUT folder of run_all.sh")
    a = p.parse_args(argv)
    out = Path(a.out)
    try:
        tables, figures = summarize(out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    drawn = [figure_file(d) for d in figures if figures_mod.draw(d, out / figure_file(d))]
    pictures = draw_cells(out, tables)
    (out / "summary.json").write_text(json.dumps({"tables": tables, "figures": figures}, indent=1, default=str) + "\n")
    (out / "summary.md").write_text(markdown(tables, figures, drawn, pictures))
    print(f"{out / 'summary.md'}: {sum(len(t['rows']) for t in tables)} rows in {len(tables)} tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
