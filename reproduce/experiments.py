"""Every table row and figure of the five papers, as data: read it next to the paper's tables.

Each `Row` is one row of a table (its label and dataset as in `paper_results.json`), each `Figure`
one quantitative figure. The vocabulary (`Search`, `Step`, `Select`, `Train`, `Measure`) is in
`reproduce/registry.py`; `bash run_all.sh --plan` lists the stages these entries make.
"""
from reproduce.registry import Figure, Measure, Row, Search, Select, Step, Train, flags

# ---------------------------------------------------------------- shared protocols

# The DARTS evaluation protocol on CIFAR (each train.py's defaults: 20 cells, 36 channels, 600 epochs,
# cutout, drop-path 0.2, auxiliary 0.4); ~1.5 GPU-days on a 1080 Ti (DARTS, Sec. 3.3).
CIFAR10 = Train("cifar10", gpu_hours=36)
CIFAR100 = Train("cifar100", gpu_hours=36)
SVHN = Train("svhn", gpu_hours=48)
# DARTS' mobile setting on ImageNet (250 epochs, 14 cells, 48 channels): ~3 GPU-days x 8 GPUs.
IMAGENET = Train("imagenet", gpus=8, gpu_hours=8 * 72)
# DARTS' selection (Liu et al., 2019, Sec. 3.2): every searched cell trained from scratch for 100
# epochs with 25,000 training images held out (the size of DARTS' search validation half); the
# best final validation accuracy is kept. The test set is not read for it.
DARTS_SELECT = Select("valid", short=Train("cifar10", flags(epochs=100, valid_size=25000), name="valid100",
                                           gpu_hours=6, smoke=flags(valid_size=16)))

EXPERIMENTS = []

# ---------------------------------------------------------------- baselines through our pipeline

# The published DARTS and PC-DARTS cells trained with our shared evaluation protocol
# (common/train_eval.py): two sanity rows of the pipeline every method's train.py uses. DARTS' number
# on CIFAR-10 is "the average test accuracy of 10 runs" of its best cell (quark0/darts README);
# PC-DARTS' evaluation "simply follows that of DARTS" (its README), so 10 runs each. train_eval's
# defaults are DARTS' settings; PC-DARTS' own differ: drop-path 0.3 (its train.py) and, on ImageNet,
# batch 1024, lr 0.5 decayed linearly (the last 5 epochs at a fifth of the slope) after a 5-epoch
# warm-up (its train_imagenet.py and paper). The test set chooses nothing here.
DARTS_RUNS = tuple(range(10))
PC_DARTS_CIFAR = Train("cifar10", flags(drop_path_prob=0.3), seeds=DARTS_RUNS, gpu_hours=36)
PC_DARTS_IMAGENET = Train("imagenet", flags(batch_size=1024, learning_rate=0.5, lr_scheduler="linear", linear_tail=5,
                                            warmup_epochs=5),
                          gpus=8, gpu_hours=8 * 72, smoke=flags(linear_tail=0, warmup_epochs=0))
EXPERIMENTS += [
    Row("baselines", "DARTS Table 1", "DARTS_V2", "cifar10", arch="DARTS_V2",
        train=Train("cifar10", seeds=DARTS_RUNS, gpu_hours=36)),
    Row("baselines", "PC-DARTS Table 1", "PC_DARTS_cifar", "cifar10", arch="PC_DARTS_cifar", train=PC_DARTS_CIFAR),
    Row("baselines", "DARTS Table 2", "DARTS_V2", "imagenet", arch="DARTS_V2", train=IMAGENET),
    Row("baselines", "PC-DARTS Table 2", "PC_DARTS_image", "imagenet", arch="PC_DARTS_image", train=PC_DARTS_IMAGENET),
]

# ---------------------------------------------------------------- MSG-DAS (Tan et al.)


def msg_das(name, **kw):
    """An MSG-DAS search (Sec. 4.2 defaults: K=2, lambda 0.01, 240 epochs), seeds 0, 1, 2 (Sec. 4.4)."""
    return Search("msg_das", name, flags(**kw), seeds=(0, 1, 2), gpu_days=0.5)


MSG_B128 = msg_das("b128")
MSG_NO_KL = msg_das("b128-nokl", lambda_guide=0)
EXPERIMENTS += [
    Row("msg_das", "Table 1", "MSG-DAS (B=128)", search=MSG_B128, train=CIFAR10),
    Row("msg_das", "Table 1", "MSG-DAS (B=160)", search=msg_das("b160", batch_size=160), train=CIFAR10),
    Row("msg_das", "Sec. 4.4", "MSG-DAS (B=64)", search=msg_das("b64", batch_size=64), train=CIFAR10),
    Row("msg_das", "Sec. 4.4", "MSG-DAS (B=96)", search=msg_das("b96", batch_size=96), train=CIFAR10),
    # Table 2: the CIFAR-10 cell on ImageNet, chosen among the three searches by DARTS' protocol
    Row("msg_das", "Table 2", "MSG-DAS", "imagenet", search=MSG_B128, select=DARTS_SELECT, train=IMAGENET),
    # Table 3: the components on and off (Dropblock-Identity is on in every row), batch 128
    Row("msg_das", "Table 3", "Pseudo Identity ✓ / Multi Graph – / Super-net Guidance –",
        search=msg_das("b128-k1-nokl", K=1, lambda_guide=0), train=CIFAR10),
    Row("msg_das", "Table 3", "Pseudo Identity ✓ / Multi Graph ✓ / Super-net Guidance –", search=MSG_NO_KL,
        train=CIFAR10),
    Row("msg_das", "Table 3", "Pseudo Identity ✓ / Multi Graph – / Super-net Guidance ✓",
        search=msg_das("b128-k1", K=1), train=CIFAR10),
    Row("msg_das", "Table 3", "Pseudo Identity ✓ / Multi Graph ✓ / Super-net Guidance ✓", search=MSG_B128,
        train=CIFAR10),
    # Table 4: the KL weight lambda of the super-net guidance (Eq. 7), batch 128
    Row("msg_das", "Table 4", "KL weight λ = 0", search=MSG_NO_KL, train=CIFAR10),
    Row("msg_das", "Table 4", "KL weight λ = 1e-2", search=MSG_B128, train=CIFAR10),
    Row("msg_das", "Table 4", "KL weight λ = 1e-1", search=msg_das("b128-kl0.1", lambda_guide=0.1), train=CIFAR10),
    Row("msg_das", "Table 4", "KL weight λ = 1", search=msg_das("b128-kl1", lambda_guide=1), train=CIFAR10),
]
# Fig. 3: K = 1..4 sub-graphs at B=64 with lambda = 0, and K=2 with lambda = 0.01 (= Sec. 4.4's B=64)
MSG_FIG3 = tuple(Row("msg_das", "Fig. 3", f"K={k}", search=msg_das(f"b64-k{k}-nokl", batch_size=64, K=k, lambda_guide=0),
                     train=CIFAR10, x={"K": k, "series": "λ=0"}) for k in (1, 2, 3, 4))
MSG_FIG3_KL = Row("msg_das", "Fig. 3", "K=2 (mutual learning, λ=0.01)", search=msg_das("b64", batch_size=64),
                  train=CIFAR10, x={"K": 2, "series": "λ=0.01"})
EXPERIMENTS += [*MSG_FIG3, MSG_FIG3_KL,
                Figure("msg_das", "Fig. 3", "test error and search cost against the number of sub-graphs K (B=64)",
                       "points", MSG_FIG3 + (MSG_FIG3_KL,), xkey="K", y=("test_error", "search_gpu_hours"))]

# ---------------------------------------------------------------- EnTranNAS (Yang et al.)

# "We run our search for 5 times and choose the architecture with the best validation accuracy";
# "the mean error rate ... of 5 independent runs" (Sec. 4.2).
ENTRANNAS_BEST = Select("search:valid_top1")
for name, row, extra in (("plain", "EnTranNAS + cutout", ()), ("dst", "EnTranNAS-DST + cutout", ("--dst",)),
                         ("ext", "EnTranNAS (12 operations) + cutout", ("--search_space", "entrannas_ext"))):
    search = Search("entrannas", name, extra, seeds=(0, 1, 2, 3, 4), gpu_days=0.06)
    EXPERIMENTS.append(Row("entrannas", "Table 6", row, search=search, select=ENTRANNAS_BEST,
                           train=Train("cifar10", seeds=(0, 1, 2, 3, 4), gpu_hours=36)))
    if name == "plain":
        EXPERIMENTS.append(Row("entrannas", "Table 7", "EnTranNAS (CIFAR-10)", "imagenet", search=search,
                               select=ENTRANNAS_BEST, train=IMAGENET))

# ---------------------------------------------------------------- DARTS-PT (Wang et al.)

PROJECTION = Step("projection_pt", "darts_pt/projection.py", gpu_hours=8, smoke=flags(proj_intv=1))


def darts_pt(space, dataset="cifar10", **kw):
    """A DARTS-PT super-net on `space` and `dataset`, four seeds, then the perturbation-based selection."""
    name = space if dataset == "cifar10" else f"{space}-{dataset}"
    return Search("darts_pt", name, flags(search_space=space, **kw), seeds=(0, 1, 2, 3), dataset=dataset,
                  steps=(PROJECTION,), gpu_days=0.8)


DARTS_PT = darts_pt("darts")
EXPERIMENTS += [
    Row("darts_pt", "Table 2", "DARTS+PT (avg)*", search=DARTS_PT, genotype="genotype.json", train=CIFAR10),
    Row("darts_pt", "App. A.8", "DARTS+PT", "imagenet", search=DARTS_PT, select=DARTS_SELECT, train=IMAGENET),
]

# ---------------------------------------------------------------- DARTS-PD (Cai et al.)

# smoke: one epoch of each stage (stage 2 not to a whole pass), one generation of four paths, the tiny
# evaluation network in buckets narrow enough (0.0005 M parameters) for its paths to fill two or more
PD_SMOKE = flags(fair_epochs=1, generations=1, population=4, parents=2, mutations=2, crossovers=2, bn_batches=1,
                 eval_layers=3, eval_init_channels=4, bucket_width=0.0005) + ("--no-whole_passes",)
# Table 1 †: "averaged on models from 3 runs" (seeds not given: 0, 1, 2); each run's best path
# (RUN/genotype.json) trained once with the PC-DARTS protocol (darts_pd/train.py). Search cost, not
# printed: stage 1 is PC-DARTS' search (0.1 GPU-days), stage 2 about a tenth of one 600-epoch
# training (669 epochs x 25k images x 2 paths of an 8-cell, 16-channel S'), stage 3 about an hour.
DARTS_PD = Search("darts_pd", "cifar10", seeds=(0, 1, 2), gpu_days=0.3, smoke=PD_SMOKE)
# DARTS-PD-a, "our best-performed model" (Sec. 4.3), chosen without the test set: the 4 fittest size
# buckets of each run (RUN/buckets/rank-<i>.json, i < 4: 12 candidates, their short trainings cost
# about two full ones), the best by DARTS' protocol (100 epochs, held-out validation), then trained.
PD_CANDIDATES = tuple(f"buckets/rank-{i}.json" for i in range(4))
# Table 2: one search on ImageNet (PC-DARTS' seed 2 and 8 GPUs). Not printed either: stage 1 is
# PC-DARTS' ImageNet search (3.8 GPU-days), stage 2 (about 269 epochs of the 1.25 M images outside
# D_val, 2 paths a step) about 4, stage 3 (1000 paths on D_val) under 1.
DARTS_PD_IMAGENET = Search("darts_pd", "imagenet", seeds=(2,), dataset="imagenet", gpus=8, gpu_days=8,
                           smoke=PD_SMOKE)
EXPERIMENTS += [
    Row("darts_pd", "Table 1", "DARTS-PD†(ours)", search=DARTS_PD, train=CIFAR10),
    Row("darts_pd", "Table 1", "DARTS-PD-a(ours)", search=DARTS_PD, genotype=PD_CANDIDATES, select=DARTS_SELECT,
        train=CIFAR10),
    Row("darts_pd", "Table 2", "DARTS-PD-A(ours)", "imagenet", search=DARTS_PD_IMAGENET, train=IMAGENET),
]

# ---------------------------------------------------------------- D-DARTS (Heuillet et al.)
# d_darts/README.md, "Reproducing the paper". One search per model (seed 2, the authors' default;
# 50 epochs, 8 cells, batch 72: the defaults), which writes every parsing (genotype_sparse.json,
# genotype_edge.json); no selection (nothing to choose among). Each architecture is trained 4 times
# (seeds 0-3) and the paper's number is the best of the 4 ("best of 4 independent runs", Tables 1-2
# captions); the summary prints it beside their mean ± std.

SPARSE, EDGE = "genotype_sparse.json", "genotype_edge.json"


def dd_search(name, dataset="cifar10", gpu_days=0.5, **kw):
    """A D-DARTS search, seed 2. `gpu_days`: the paper's search cost (Tables 1-2: L_F 0.5, L_T on
    CIFAR-100 0.9). Smoke: 5 cells, the fewest from which Alg. 1 derives a deeper network."""
    return Search("d_darts", name, flags(**kw), seeds=(2,), dataset=dataset, gpu_days=gpu_days,
                  smoke=flags(layers=5))


def dd_train(dataset, layers=None, seeds=(0, 1, 2, 3), **kw):
    """Trainings of a D-DARTS genotype with the paper's protocol (train.py's defaults: DARTS' on CIFAR with the
    searched 8 cells, 14 layers and 400 epochs on ImageNet) and mixed precision (Sec. 5.1: "mainly when fully
    training models"); `layers` deepens the network by Alg. 1. Smoke: the 5 searched cells, or 9 layers by Alg. 1."""
    fl = flags(amp=True) + (flags(layers=layers) if layers else ())
    name = f"{dataset}-{layers}layers" if layers else ""
    return Train(dataset, fl, seeds=seeds, name=name, smoke=flags(layers=9 if layers else 5), **kw)


DD_LF_C10 = dd_search("lf-c10", w_abl=0)  # L_F (Eq. 4): DD-1 (sparse), DD-2 (edge)
DD_LT_C10 = dd_search("lt-c10")  # L_T (Eq. 9): DD-3 (sparse)
DD_LT_C100 = dd_search("lt-c100", "cifar100", gpu_days=0.9)  # L_T: DD-4 (edge), DD-5 (sparse)
# No training time is printed for CIFAR: DARTS' 20-cell training (~36 GPU-hours) scaled by depth.
DD_C10, DD_C100 = dd_train("cifar10", gpu_hours=15), dd_train("cifar100", gpu_hours=15)
DD_C10_14, DD_C100_14 = dd_train("cifar10", 14, gpu_hours=25), dd_train("cifar100", 14, gpu_hours=25)
# Sec. 5.5: 400 epochs take "around 10 days on a single GPU"; one training (Table 3 has no best-of-4).
DD_IMAGENET = dd_train("imagenet", 14, seeds=(0,), gpus=8, gpu_hours=240)
EXPERIMENTS += [
    Row("d_darts", "Table 1", "DD-1", search=DD_LF_C10, genotype=SPARSE, train=DD_C10),
    Row("d_darts", "Table 1", "DD-2", search=DD_LF_C10, genotype=EDGE, train=DD_C10),
    Row("d_darts", "Table 1", "DD-3", search=DD_LT_C10, genotype=SPARSE, train=DD_C10),
    Row("d_darts", "Table 1", "DD-4", search=DD_LT_C100, genotype=EDGE, train=DD_C10),
    Row("d_darts", "Table 1", "DD-4 (14 layers)", search=DD_LT_C100, genotype=EDGE, train=DD_C10_14),
    Row("d_darts", "Table 1", "DD-5", search=DD_LT_C100, genotype=SPARSE, train=DD_C10),
    Row("d_darts", "Table 2", "DD-2", "cifar100", search=DD_LF_C10, genotype=EDGE, train=DD_C100),
    Row("d_darts", "Table 2", "DD-2 (14 layers)", "cifar100", search=DD_LF_C10, genotype=EDGE, train=DD_C100_14),
    Row("d_darts", "Table 2", "DD-3", "cifar100", search=DD_LT_C10, genotype=SPARSE, train=DD_C100),
    Row("d_darts", "Table 2", "DD-4", "cifar100", search=DD_LT_C100, genotype=EDGE, train=DD_C100),
    Row("d_darts", "Table 2", "DD-4 (14 layers)", "cifar100", search=DD_LT_C100, genotype=EDGE, train=DD_C100_14),
    Row("d_darts", "Table 2", "DD-5", "cifar100", search=DD_LT_C100, genotype=SPARSE, train=DD_C100),
    # Table 3 prints DD-2 with the *sparse* parsing (5.44M, 590M): the L_F search's sparse cells (DD-1's)
    Row("d_darts", "Table 3", "DD-2 (sparse)", "imagenet", search=DD_LF_C10, genotype=SPARSE, train=DD_IMAGENET),
    Row("d_darts", "Table 3", "DD-5", "imagenet", search=DD_LT_C100, genotype=SPARSE, train=DD_IMAGENET),
]


def dd_figure_numbers(name, *keys):
    """d_darts/search_stats.py on the row's search: the numbers a figure plots (`keys`)."""
    return (Measure(name, "d_darts/search_stats.py", inputs=(("--search_dirs", "searches"),), keys=keys),)


# Fig. 3: the minimal global loss of a 50-epoch CIFAR-100 search against w_abl, with L01 off (w01 = 0).
# w_abl acts on the alphas only through the gradient of L_AB, hence its differentiable form (under the
# default constant form every w_abl gives the same search). The loss is the authors' 'global loss' (the
# epoch's mean weight-step loss, min_train_loss); the super-net's validation loss beside it. Cost: a
# differentiable L_AB step takes ~1.7x a constant one (d_darts/README, Efficiency), so ~1.5 GPU-days.
DD_FIG3 = tuple(Row("d_darts", "Fig. 3", f"w_abl={w}", "cifar100",
                    search=dd_search(f"abl-{w}", "cifar100", gpu_days=1.5 if w else 0.5, w01=0,
                                     ablation_loss="differentiable", w_abl=w),
                    measure=dd_figure_numbers(f"fig3-abl-{w}", "min_train_loss", "min_valid_loss"), x={"w_abl": w})
                for w in (0, 0.25, 0.5, 0.75, 1, 1.5, 2))
# Fig. 4: the shares of sigmoid weights above 0.9 and below 0.1 after a CIFAR-100 search, against w01
# (w_abl 0.5); the paper names 0, 5, 7 and 10, not its grid. w01 = 7 is the DD-4 / DD-5 search.
DD_FIG4 = tuple(Row("d_darts", "Fig. 4", f"w01={w}", "cifar100",
                    search=DD_LT_C100 if w == 7 else dd_search(f"w01-{w}", "cifar100", gpu_days=0.9, w01=w),
                    measure=dd_figure_numbers(f"fig4-w01-{w}", "ops_above_0.9_pct", "ops_below_0.1_pct"),
                    x={"w01": w})
                for w in range(11))
# Fig. 5: the best validation top-1 of the super-net per search epoch on CIFAR-10: D-DARTS (L_T), the
# FairDARTS super-net (one architecture per cell type, sigmoid + L01 with FairDARTS' weight, no schedule on
# the alphas) and first-order DARTS (darts_pt/train_search.py; ~0.4 GPU-days, as MSG-DAS and DARTS-PT cite it).
DD_FIG5 = (Row("d_darts", "Fig. 5", "D-DARTS", search=DD_LT_C10),
           Row("d_darts", "Fig. 5", "FairDARTS", search=dd_search("fair-c10", share_alphas=True, w_abl=0, w01=5,
                                                                  arch_learning_rate_min=3e-3)),
           Row("d_darts", "Fig. 5", "DARTS", search=Search("darts_pt", "darts-c10", flags(method="darts"), seeds=(2,),
                                                           gpu_days=0.4)))
EXPERIMENTS += [
    # w_abl = 0.5 first: --smoke runs the first row of a kind, and w_abl = 0 would not run the ablated networks
    *sorted(DD_FIG3, key=lambda r: r.x["w_abl"] != 0.5),
    Figure("d_darts", "Fig. 3", "minimal global loss of a CIFAR-100 search against w_abl (w01 = 0)",
           "points", DD_FIG3, xkey="w_abl", y=("min_train_loss", "min_valid_loss")),
    *DD_FIG4,
    Figure("d_darts", "Fig. 4", "% of sigmoid weights > 0.9 and < 0.1 after a CIFAR-100 search against w01",
           "points", DD_FIG4, xkey="w01", y=("ops_above_0.9_pct", "ops_below_0.1_pct")),
    *DD_FIG5,
    Figure("d_darts", "Fig. 5", "best super-net valid top-1 per epoch, CIFAR-10",
           "curves", DD_FIG5, y=("valid_top1",), running="max"),
]
