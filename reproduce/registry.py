"""The vocabulary of the experiment registry (`reproduce/experiments.py`) and the DAG of stages built
from it.

An experiment is one row of a paper's table (`Row`) or one figure (`Figure`). A row says how its
architectures are found and trained, in the terms a reader of the paper uses:

    Row("msg_das", "Table 1", "MSG-DAS (B=128)",
        search=Search("msg_das", "b128", seeds=(0, 1, 2)),   # msg_das/train_search.py --seed S
        train=Train("cifar10"))                               # msg_das/train.py --arch S/genotype.json

`plan(experiments, ctx)` turns the rows into `Stage`s: one run folder each under OUT, one command,
its dependencies, its resources and an estimate of its GPU-hours. Stages with the same folder are
the same stage (a search that several rows share runs once). Every stage is a script that takes
`--save FOLDER --resume` and writes `summary.json` last, so a stage is done when that file exists,
and a started one continues where it stopped.

Folders under OUT:
    METHOD/SEARCH/sSEED/                       a search (SEARCH: the Search's name)
    METHOD/SEARCH/sSEED/STEP/                  a post-search step on it (DARTS-PT's projection, ...)
    METHOD/SEARCH/sSEED-TRAIN-eSEED/           a training of its genotype (TRAIN: the Train's name)
    METHOD/SEARCH/select-RULE/                 the architecture chosen among the seeds (genotype.json)
    METHOD/SEARCH/select-RULE-TRAIN-eSEED/     a training of the chosen architecture
    PAPER/published/ARCH-TRAIN-eSEED/          a training of a published genotype
    PAPER/measure/NAME/                        a measurement (consistency, efficiency, ...)
"""
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tiny settings of --smoke, for every script (the entries add their own `smoke` flags after these).
SMOKE_SEARCH = ("--dataset", "synthetic", "--subset", "64", "--image_size", "8", "--workers", "0", "--epochs", "1",
                "--layers", "3", "--init_channels", "4", "--batch_size", "32")
SMOKE_TRAIN = SMOKE_SEARCH


def flags(**kw):
    """Command-line flags from keywords: flags(K=2, batch_size=64, mutual=True) -> ('--K', '2', ...);
    True is a bare switch, False its `--no-` form."""
    out = []
    for k, v in kw.items():
        if v is True:
            out.append(f"--{k}")
        elif v is False:
            out.append(f"--no-{k}")
        else:
            out += [f"--{k}", *(map(str, v) if isinstance(v, (list, tuple)) else [str(v)])]
    return tuple(out)


# ---------------------------------------------------------------- what a row is made of

@dataclass(frozen=True)
class Step:
    """A post-search step run on each search folder: `SCRIPT ARG SEARCH FLAGS`, into SEARCH/NAME
    (DARTS-PT's projection, ...). `genotype` is what it writes, relative to its folder."""
    name: str
    script: str
    flags: tuple = ()
    arg: str = "--search_dir"
    genotype: str = "genotype.json"
    gpu_hours: float = 0.0
    smoke: tuple = ()


@dataclass(frozen=True)
class Search:
    """One search configuration of a method, run once per seed: METHOD/train_search.py FLAGS --seed S.
    `name` is its folder (several rows may share it: it runs once). `steps` run on each search, in
    order. `gpu_days` is the paper's search cost (for --plan's estimate). `sweep` names flags whose
    values are the points of a table's grid, as numbers are (DARTS-PT Table 3's `search_space`):
    kind() does not tell them apart, so --smoke runs one of them."""
    method: str
    name: str
    flags: tuple = ()
    seeds: tuple = (0,)
    dataset: str = "cifar10"
    steps: tuple = ()
    gpus: int = 1
    gpu_days: float = 0.0
    script: str = "train_search.py"
    smoke: tuple = ()
    done: str = "summary.json"  # what marks it finished (DARTS-PD's `--stage 1` alone: stage1/summary.json)
    sweep: tuple = ()

    def folder(self, seed):
        return f"{self.method}/{self.name}/s{seed}"


@dataclass(frozen=True)
class Lookup:
    """A benchmark file of trained architectures (NAS-Bench-201's) that stands in for a Train when it is
    in the --data folder: `SCRIPT --arch GENOTYPE --dataset D --data DIR FLAGS` writes, instead of a
    training, a summary.json with the benchmark's `final_top1` and `evaluated_by` (one per architecture:
    the benchmark's trainings are its own); without the file the Train trains. `file_flag` passes the
    file's path to SCRIPT (it is in the --data folder, not in that of every dataset: ImageNet16-120's)."""
    file: str
    script: str
    flags: tuple = ()
    file_flag: str = ""


@dataclass(frozen=True)
class Train:
    """Training from scratch with the method's train.py (the paper's protocol) on `dataset`: one
    training per seed in `seeds`; `seeds=None` trains each searched architecture once with its
    search's seed. `gpu_hours` per training at the paper's settings, all its GPUs together (for --plan).
    `lookup` replaces the trainings when its benchmark file is there."""
    dataset: str = "cifar10"
    flags: tuple = ()
    seeds: tuple | None = None
    name: str = ""
    gpus: int = 1
    gpu_hours: float = 0.0
    smoke: tuple = ()
    lookup: Lookup | None = None

    @property
    def label(self):
        return self.name or self.dataset


@dataclass(frozen=True)
class Select:
    """How the architecture of a row is chosen among its searches (never on the test set):
      each                 every search's architecture is trained (the row is the mean over all);
      valid                DARTS' protocol: each architecture trained briefly (`short`, with a
                           held-out validation split), the best validation accuracy is kept;
      search:KEY           the search whose summary.json (else last metrics.jsonl record) has the
                           highest KEY."""
    rule: str = "each"
    short: Train | None = None

    @property
    def label(self):
        return self.rule.replace(":", "-")


EACH = Select()


@dataclass(frozen=True)
class Measure:
    """A measurement stage: `SCRIPT FLAGS`, the data flags of `dataset` when it reads one, and for
    each input `--ARG FOLDER...`: the searches or the trainings of this row, or a file in each
    (`("--backbone", "trainings", "checkpoint.pt")`); its summary.json holds the numbers the row
    reports (`keys`). `smoke_inputs` replace `inputs` in smoke mode where a tiny run cannot give
    what the full one needs (a CIFAR-sized smoke training cannot seed an ImageNet backbone)."""
    name: str
    script: str
    flags: tuple = ()
    inputs: tuple = ()  # (("--search_dirs", "searches"), ("--eval_dirs", "trainings", "summary.json"))
    keys: tuple = ()
    dataset: str | None = None
    gpu_hours: float = 0.0
    smoke: tuple = ()
    smoke_inputs: tuple | None = None


@dataclass(frozen=True)
class Row:
    """One row of a paper's table: `paper` (method folder), `table` ("Table 1", "Sec. 4.4"), `row`
    (its label in paper_results.json) and `dataset` (the evaluation dataset). Its architectures
    come from `search` (then `genotype` names the file in each search folder, or in its last
    step's folder; a tuple of files makes each of them a candidate, e.g. DARTS-PD's best bucket
    entries) or from a published genotype `arch`; `select` chooses among all candidates of all
    searches; `train` trains what was chosen; `measure` adds stages whose numbers the row reports;
    `logged` names numbers the row reports as its searches logged them (their summary.json, else the
    last record of their metrics.jsonl; the mean over the searches): Table 1's accuracies, Table 4's edges."""
    paper: str
    table: str
    row: str
    dataset: str = "cifar10"
    search: Search | None = None
    arch: str | None = None
    genotype: str | tuple = "genotype.json"
    select: Select = EACH
    train: Train | None = None
    measure: tuple = ()
    logged: tuple = ()
    x: dict = field(default_factory=dict)  # the row's coordinates in a figure (K=2, lambda=0.01, ...)
    note: str = ""

    @property
    def key(self):
        """Its entry in paper_results.json: (method, row, dataset)."""
        return (self.paper, self.row, self.dataset)

    @property
    def method(self):
        return self.search.method if self.search else self.paper

    @property
    def genotypes(self):
        """The genotype files it takes from each search folder."""
        return (self.genotype,) if isinstance(self.genotype, str) else tuple(self.genotype)

    @property
    def train_script(self):
        """The method's train.py; common/train_eval.py for rows outside the five methods (baselines)."""
        if (ROOT / self.method / "train.py").exists():
            return (f"{self.method}/train.py",)
        return ("-m", "common.train_eval")


@dataclass(frozen=True)
class Figure:
    """A quantitative figure: `points` plots rows' reported values against one of their `x`
    coordinates (`y` names the values, e.g. ("test_error", "search_gpu_hours")); `curves` plots a
    metrics.jsonl key per epoch of the searches of rows (`y`), one curve per row; with `running="max"`
    (or "min") each search's curve is its best value so far (a "best accuracy per epoch" plot); `edges`
    draws, per edge the rows' measurements analysed, each op's alpha beside its accuracy (DARTS-PT's Fig. 1)."""
    paper: str
    figure: str
    title: str
    kind: str  # "points" | "curves" | "edges"
    rows: tuple
    xkey: str = "epoch"
    y: tuple = ("test_error",)
    paper_values: dict = field(default_factory=dict)  # {(row label, y): value} where the paper prints them
    running: str = ""  # curves: "max" / "min", the running maximum / minimum of each search's curve
    curves_of: str = "searches"  # curves: the metrics.jsonl of the rows' "searches", or of their post-search "steps"


# ---------------------------------------------------------------- stages

@dataclass
class Stage:
    """One run folder under OUT and the command that fills it (run from the repository root with
    `--save OUT/name --resume`; under torchrun when `gpus > 1`)."""
    name: str
    argv: tuple
    deps: tuple = ()
    gpus: int = 1
    kind: str = "search"
    gpu_hours: float = 0.0
    rows: list = field(default_factory=list)
    done: str = "summary.json"


@dataclass(frozen=True)
class Context:
    """What a plan is made for: smoke (tiny, synthetic) or full; where the data is; which seeds."""
    smoke: bool = False
    data: str = "data"
    imagenet: str = ""
    imagenet16: str = ""  # ImageNet16-120 (NAS-Bench-201's)
    voc: str = ""
    seeds: tuple | None = None  # instead of every paper's own search seeds
    smoke_seeds: int = 1  # searches per configuration in smoke mode (2 where a selection needs a choice)

    def dataset_flags(self, dataset):
        """--dataset/--data for a paper's dataset, or the synthetic data in smoke mode (synthetic_seg for
        segmentation) and for the demo's rows, whose dataset it is; None when the data was not given
        (the row is then left out of the plan)."""
        if self.smoke or dataset == "synthetic":
            return ("--dataset", "synthetic_seg" if dataset == "voc" else "synthetic")
        if dataset == "imagenet":
            return ("--dataset", "imagenet", "--data", self.imagenet) if self.imagenet else None
        if dataset == "imagenet16-120":
            return ("--dataset", dataset, "--data", self.imagenet16) if self.imagenet16 else None
        if dataset == "voc":  # Pascal VOC 2012 (entrannas/segmentation.py)
            return ("--dataset", "voc2012", "--data", self.voc) if self.voc else None
        return ("--dataset", dataset, "--data", self.data, "--download")

    def has(self, file):
        """Whether FILE (a benchmark) is in the --data folder; never in smoke mode."""
        return not self.smoke and (Path(self.data) / file).is_file()

    def search_seeds(self, search, needs_choice=False):
        seeds = self.seeds or search.seeds
        if self.smoke:
            return seeds[:max(self.smoke_seeds, 2 if needs_choice else 1)]
        return seeds


class PlanError(ValueError):
    """Two entries that define the same stage differently, or a row that cannot be planned."""


class Plan:
    """The stages of a set of experiments, in dependency order, and for each row the stages whose
    results it reports."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.stages = {}  # name -> Stage; insertion order is a topological order
        self.rows = {}  # row key -> (table, {"searches", "steps", "select", "short", "trainings", "measures", ...})
        self.skipped = []  # (row, reason)

    def genotypes(self, row):
        """The genotype files a row takes from each search folder (smoke: the first two)."""
        return row.genotypes[:2] if self.ctx.smoke else row.genotypes

    def add(self, stage, row):
        """Add a stage (or find the same one, added by another row); returns its name."""
        if self.ctx.smoke:  # tiny stages run on one device
            stage.gpus = min(stage.gpus, 1)
        old = self.stages.setdefault(stage.name, stage)
        if (old.argv, old.deps, old.gpus) != (stage.argv, stage.deps, stage.gpus):
            raise PlanError(f"two entries define the stage {stage.name} differently:\n  {old.argv}\n  {stage.argv}")
        if row.key not in old.rows:
            old.rows.append(row.key)
        return old.name

    def add_row(self, row):
        needs = (row.dataset, row.search and row.search.dataset, row.train and row.train.dataset,
                 *(m.dataset for m in row.measure))
        missing = [d for d in needs if d and self.ctx.dataset_flags(d) is None]
        if missing:
            flag = {"imagenet16-120": "imagenet16"}.get(missing[0], missing[0])
            self.skipped.append((row, f"needs --{flag} (where its data is)"))
            return
        if row.key in self.rows:
            raise PlanError(f"two rows have the key {row.key} (paper, row label, dataset)")
        parts = {"searches": [], "steps": [], "select": None, "short": [], "trainings": [], "measures": [],
                 "measured": [k for m in row.measure for k in m.keys], "logged": list(row.logged)}
        self.rows[row.key] = (row.table, parts)
        if row.search is None:
            chosen = [(row.arch, None, f"{row.paper}/published/{row.arch}", ())]
        else:
            found = self._searches(row, parts)
            chosen = found if row.select.rule == "each" else [self._select(row, found, parts)]
        if row.train is not None:
            for arch, seed, prefix, deps in chosen:
                parts["trainings"] += self._trainings(row, row.train, arch, seed, prefix, deps)
        for m in row.measure:
            parts["measures"].append(self._measure(row, m, parts))

    def _searches(self, row, parts):
        """The searches of a row and their steps: [(genotype, seed, folder prefix, deps)]."""
        ctx, s = self.ctx, row.search
        found = []
        # a selection needs two candidates: two searches, unless each search offers two
        for seed in ctx.search_seeds(s, needs_choice=row.select.rule != "each" and len(self.genotypes(row)) < 2):
            argv = (f"{s.method}/{s.script}", *ctx.dataset_flags(s.dataset), *s.flags, "--seed", str(seed))
            if ctx.smoke:
                argv += (*SMOKE_SEARCH[2:], *s.smoke)
            last = self.add(Stage(s.folder(seed), argv, (), s.gpus, "search", s.gpu_days * 24, done=s.done), row)
            parts["searches"].append(last)
            prefix = last
            for step in s.steps:
                argv = (step.script, step.arg, self.path(last), *step.flags, *(step.smoke if ctx.smoke else ()))
                last = self.add(Stage(f"{s.folder(seed)}/{step.name}", argv, (last,), s.gpus, "step",
                                      step.gpu_hours), row)
                parts["steps"].append(last)
                prefix += f"-{step.name}"
            for file in self.genotypes(row):
                found.append((self.path(f"{last}/{file}"), seed, prefix + _genotype_tag(file), (last,)))
        return found

    def _select(self, row, found, parts):
        """The selection stage (`python -m reproduce.select`): it copies the chosen genotype into
        its folder and says why in its summary.json."""
        sel, s = row.select, row.search
        argv = ("-m", "reproduce.select", "--rule", sel.rule)
        deps = tuple(d for *_, ds in found for d in ds)
        if sel.rule == "valid":  # DARTS' protocol: a short training of each, on a held-out split
            short = [self._trainings(row, sel.short, arch, 0, prefix, ds)[0] for arch, _, prefix, ds in found]
            parts["short"] = short
            argv += ("--trainings", *map(self.path, short))
            deps += tuple(short)
        argv += ("--genotypes", *(arch for arch, *_ in found))
        tag = "".join(map(_genotype_tag, self.genotypes(row)))
        name = self.add(Stage(f"{s.method}/{s.name}/select-{sel.label}{tag}", argv, deps, 0, "select"), row)
        parts["select"] = name
        return self.path(f"{name}/genotype.json"), None, name, (name,)

    def _trainings(self, row, t, arch, seed, prefix, deps):
        ctx = self.ctx
        if t.lookup and ctx.has(t.lookup.file):
            argv = (t.lookup.script, "--arch", arch, *ctx.dataset_flags(t.dataset), *t.lookup.flags)
            if t.lookup.file_flag:
                argv += (t.lookup.file_flag, str(Path(ctx.data) / t.lookup.file))
            return [self.add(Stage(f"{prefix}-{t.label}-lookup", argv, deps, 0, "lookup"), row)]
        seeds = t.seeds if t.seeds is not None else (seed or 0,)
        names = []
        for e in seeds[:1] if ctx.smoke else seeds:
            argv = (*row.train_script, "--arch", arch, *ctx.dataset_flags(t.dataset), *t.flags, "--seed", str(e))
            if ctx.smoke:
                argv += (*SMOKE_TRAIN[2:], *t.smoke)
            names.append(self.add(Stage(f"{prefix}-{t.label}-e{e}", argv, deps, t.gpus, "train", t.gpu_hours), row))
        return names

    def _measure(self, row, m, parts):
        argv, deps = (m.script, *m.flags, *(self.ctx.dataset_flags(m.dataset) if m.dataset else ())), ()
        inputs = m.smoke_inputs if self.ctx.smoke and m.smoke_inputs is not None else m.inputs
        for arg, what, *file in inputs:
            argv += (arg, *(self.path("/".join((name, *file))) for name in parts[what]))
            deps += tuple(parts[what])
        if self.ctx.smoke:
            argv += m.smoke
        return self.add(Stage(f"{row.paper}/measure/{m.name}", argv, deps, 1, "measure", m.gpu_hours), row)

    @staticmethod
    def path(name):
        """A stage folder as the commands see it; `{out}` becomes OUT when the stage runs."""
        return f"{{out}}/{name}"


def row_stages(parts):
    """The stages a row reports from (its `parts` in Plan.rows or plan.json): searches, steps, short
    trainings, trainings, measurements and its selection."""
    names = [*parts["searches"], *parts["steps"], *parts.get("short", []), *parts["trainings"], *parts["measures"]]
    return names + ([parts["select"]] if parts.get("select") else [])


def _genotype_tag(file):
    """How the stages of a search's other outputs are named apart: '' for genotype.json, '-edge' for
    D-DARTS' genotype_edge.json, '-rank-1' for DARTS-PD's buckets/rank-1.json."""
    stem = Path(file).stem
    return "" if stem == "genotype" else "-" + stem.removeprefix("genotype_")


def _variant(fl, sweep=()):
    """The flags that make a variant: names, and values that are not numbers (`--method blank`,
    `--search_space s2`, `--dst`), not the numbers (`--K 2`, `--batch_size 64`) nor the values of
    the flags in `sweep`."""
    def number(v):
        try:
            float(v)
            return True
        except ValueError:
            return v in ("inf", "-inf")
    swept = {f"--{k}" for k in sweep}
    return tuple(f for i, f in enumerate(fl) if f.startswith("--") or not (number(f) or fl[i - 1] in swept))


def _command(m):
    """What a measurement runs: its script, the words before its first flag (a module, a
    subcommand) and the names of its flags; not the values it is given (a configuration to
    measure, a published architecture), which make no other code run."""
    lead = next((i for i, f in enumerate(m.flags) if f.startswith("--")), len(m.flags))
    return (m.script, *m.flags[:lead], *(f for f in m.flags[lead:] if f.startswith("--")))


def kind(row):
    """What kind of experiment a row is, for --smoke: rows of one kind differ only in numbers
    (batch sizes, lambdas, seeds, datasets, the points of a `sweep`) or in what their post-search
    steps and measurements are given (a step or a measurement is known by its script and flags), so
    the smoke run keeps the first of each kind."""
    s, t = row.search, row.train
    return (row.paper, row.arch is not None,
            s and (s.method, s.script, _variant(s.flags, s.sweep),
                   tuple((st.script, _variant(st.flags)) for st in s.steps)),
            tuple(Path(f).stem for f in row.genotypes), row.select.rule, row.dataset == "imagenet",
            t and _variant(t.flags), tuple(_command(m) for m in row.measure))


def plan(experiments, ctx):
    """The Plan of every Row among `experiments` (Figures add no stages: they draw rows); in smoke
    mode one row of each kind."""
    p, kinds = Plan(ctx), set()
    for e in experiments:
        if isinstance(e, Row):
            if ctx.smoke and kind(e) in kinds:
                continue
            kinds.add(kind(e))
            p.add_row(e)
    return p


def to_json(p):
    """The plan as data (OUT/plan.json): what the summary and a later --plan read."""
    return {"context": {k: getattr(p.ctx, k) for k in p.ctx.__dataclass_fields__},
            "stages": [{"name": s.name, "argv": list(s.argv), "deps": list(s.deps), "gpus": s.gpus, "kind": s.kind,
                        "gpu_hours": s.gpu_hours, "rows": [list(k) for k in s.rows], "done": s.done}
                       for s in p.stages.values()],
            "rows": [{"key": list(k), "table": t, "parts": parts} for k, (t, parts) in p.rows.items()],
            "skipped": [{"key": list(r.key), "table": r.table, "why": why} for r, why in p.skipped]}
