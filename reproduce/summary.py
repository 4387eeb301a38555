"""The results table of run_all.sh, beside the papers' numbers.

run_all.sh appends one line per evaluation run to OUT/runs.tsv (tab-separated):
    method  paper_row  dataset  genotype.json  search_dir[,search_dir...]  eval_dir
where `paper_row` is the row's label in the paper (the key into paper_results.json), `dataset`
the evaluation dataset, and the search folders those whose cost the architecture took (a
DARTS-PT search and its projection, the three stages of DARTS-PD, ...). This module groups the
lines by (method, paper_row, dataset) and writes OUT/summary.md and OUT/summary.json.

Usage:
  python -m reproduce.summary OUT                     the table
  python -m reproduce.summary --best valid_top1 RUN.. the search whose last epoch has the highest valid_top1
"""
import argparse
import json
import math
import statistics
import sys
from pathlib import Path

PAPER = Path(__file__).with_name("paper_results.json")
FIELDS = ("method", "row", "dataset", "genotype", "search", "eval")


def read_runs(out):
    """The lines of OUT/runs.tsv as dicts, first occurrence of each evaluation folder only."""
    path, seen, runs = Path(out) / "runs.tsv", set(), []
    for line in path.read_text().splitlines() if path.exists() else []:
        run = dict(zip(FIELDS, line.split("\t")))
        if len(run) == len(FIELDS) and run["eval"] not in seen:
            seen.add(run["eval"])
            runs.append({**run, "search": run["search"].split(",")})
    return runs


def _json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def search_cost(folder):
    """Time, GPU-hours and peak GPU memory of a search folder: every `summary.json` below it is
    a finished stage (search, projection, stage 2, ...); times add up, memory is the maximum."""
    stages = [s for s in map(_json, sorted(Path(folder).rglob("summary.json"))) if s and "search_time_s" in s]
    gpu = [s["gpu_hours"] for s in stages if s.get("gpu_hours") is not None]
    mem = [s["peak_memory_MB"] for s in stages if s.get("peak_memory_MB") is not None]
    return {"hours": sum(s["search_time_s"] for s in stages) / 3600,
            "gpu_hours": sum(gpu) if gpu else None, "peak_memory_MB": max(mem) if mem else None,
            "devices": sorted({s.get("device", "?").split(":")[0] for s in stages})}


def drawing(genotype, out):
    """The best picture of a genotype that exists (svg, png, else the DOT source), relative to OUT."""
    stem = Path(genotype).with_suffix("")
    for ext in (".svg", ".png", ".dot"):
        if stem.with_suffix(ext).exists():
            return str(Path(stem.with_suffix(ext)).resolve().relative_to(Path(out).resolve()))
    return None


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def paper_row(method, row, dataset, paper):
    return next((p for p in paper if (p["method"], p["row"], p["dataset"]) == (method, row, dataset)), None)


def summarize(out, paper=None):
    """One record per (method, paper row, dataset) with our numbers and the paper's."""
    paper = paper if paper is not None else json.loads(PAPER.read_text())
    groups = {}
    for run in read_runs(out):
        groups.setdefault((run["method"], run["row"], run["dataset"]), []).append(run)
    table = []
    for (method, row, dataset), runs in groups.items():
        evals = [(r, _json(Path(r["eval"]) / "summary.json")) for r in runs]
        done = [(r, s) for r, s in evals if s and s.get("final_top1") is not None]
        errors = [100 - s["final_top1"] for _, s in done]
        costs = {d: search_cost(d) for r, _ in evals for d in r["search"]}
        per_arch = [[costs[d] for d in r["search"]] for r, _ in evals]  # the stages behind each architecture
        gpu = [[c["gpu_hours"] for c in arch if c["gpu_hours"] is not None] for arch in per_arch]
        mems = [c["peak_memory_MB"] for c in costs.values() if c["peak_memory_MB"] is not None]
        table.append({
            "method": method, "row": row, "dataset": dataset, "runs": len(runs), "finished": len(done),
            "trained_on": sorted({s.get("dataset") for _, s in done}),
            "test_error": _mean(errors), "test_error_std": statistics.pstdev(errors) if len(errors) > 1 else None,
            "test_error_best": min(errors) if errors else None,
            "params_M": _mean([s.get("params_M") for _, s in done]),
            "mult_adds_M": _mean([s.get("mult_adds_M") for _, s in done]),
            "search_hours": _mean([sum(c["hours"] for c in arch) for arch in per_arch]),
            "search_gpu_hours": _mean([sum(g) if g else None for g in gpu]),
            "search_peak_memory_MB": max(mems) if mems else None,
            "devices": sorted({d for c in costs.values() for d in c["devices"]}),
            "drawings": sorted({d for r in runs if (d := drawing(r["genotype"], out))}),
            "eval_dirs": [r["eval"] for r in runs],
            "paper": paper_row(method, row, dataset, paper)})
    return table


def _f(x, digits=2):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(table):
    lines = ["# Results", "",
             "Ours: test error of the last epoch (mean ± std over the runs listed, population std; best), parameters "
             "and multiply-adds of the evaluation network, search time per architecture (all stages) in hours, "
             "GPU-hours when it ran on GPUs, peak GPU memory of the search. Paper: the same columns as printed "
             "(search cost in GPU-days, memory in GB), with the table they come from.", "",
             "| method | setting (paper row) | dataset | runs | error % | best % | params M | M-adds M | search h "
             "(device) | search GPU-h | search mem MB | paper error % | paper params M | paper M-adds M "
             "| paper GPU-days | paper mem GB | source | cells |",
             "|" + "---|" * 18]
    for t in table:
        p = t["paper"] or {}
        err = _f(t["test_error"]) + (f" ± {_f(t['test_error_std'])}" if t["test_error_std"] is not None else "")
        perr = _f(p.get("test_error")) + (f" ± {_f(p['test_error_std'])}" if p.get("test_error_std") is not None
                                          else "")
        runs = f"{t['finished']}/{t['runs']}" if t["finished"] != t["runs"] else str(t["runs"])
        data = t["dataset"] if t["trained_on"] in ([], [t["dataset"]]) else \
            f"{','.join(t['trained_on'])} (paper: {t['dataset']})"
        cells = " ".join(f"[{i + 1}]({d})" for i, d in enumerate(t["drawings"]))
        lines.append(f"| {t['method']} | {t['row']} | {data} | {runs} | {err} | {_f(t['test_error_best'])} | "
                     f"{_f(t['params_M'], 3)} | {_f(t['mult_adds_M'], 1)} | {_f(t['search_hours'], 3)} "
                     f"({','.join(t['devices'])}) | {_f(t['search_gpu_hours'], 3)} | "
                     f"{_f(t['search_peak_memory_MB'], 0)} | {perr} | {_f(p.get('params_M'))} | "
                     f"{_f(p.get('mult_adds_M'), 0)} | {_f(p.get('search_cost_gpu_days'))} | "
                     f"{_f(p.get('search_memory_GB'), 1)} | {p.get('source', 'not in the paper')} | {cells} |")
    if any(d.endswith(".dot") for t in table for d in t["drawings"]):
        lines += ["", "The cells are linked as DOT files: graphviz' `dot` program was not installed when they were "
                  "drawn (`dot -Tsvg FILE -o FILE.svg` renders one)."]
    return "\n".join(lines) + "\n"


def best_run(folders, key):
    """The folder with the highest final `key`: from its summary.json, else from the last record of
    its metrics.jsonl (EnTranNAS keeps the search with the best validation accuracy of five)."""
    def final(folder):
        summary = _json(Path(folder) / "summary.json") or {}
        if key in summary:
            return summary[key]
        lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])[key] if lines else -math.inf
    return max(folders, key=final)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="OUT of run_all.sh, or search folders with --best")
    p.add_argument("--best", metavar="KEY", help="print the search folder with the highest final KEY")
    a = p.parse_args(argv)
    if a.best:
        print(best_run(a.folders, a.best))
        return
    out = Path(a.folders[0])
    table = summarize(out)
    (out / "summary.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(table))
    print(f"{out / 'summary.md'}: {len(table)} rows")


if __name__ == "__main__":
    sys.exit(main())
