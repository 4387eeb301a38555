"""Every table row and figure of the five papers, as data: read it next to the paper's tables.

Each `Row` is one row of a table (its label and dataset as in `paper_results.json`), each `Figure`
one quantitative figure. The vocabulary (`Search`, `Step`, `Select`, `Train`, `Measure`) is in
`reproduce/registry.py`; `bash run_all.sh --plan` lists the stages these entries make.
"""
from reproduce.registry import Figure, Row, Search, Select, Step, Train, flags

# ---------------------------------------------------------------- shared protocols

# The DARTS evaluation protocol on CIFAR (each train.py's defaults: 20 cells, 36 channels, 600 epochs,
# cutout, drop-path 0.2, auxiliary 0.4); ~1.5 GPU-days on a 1080 Ti (DARTS, Sec. 3.3).
CIFAR10 = Train("cifar10", gpu_hours=36)
CIFAR100 = Train("cifar100", gpu_hours=36)
SVHN = Train("svhn", gpu_hours=48)
# DARTS' mobile setting on ImageNet (250 epochs, 14 cells, 48 channels): ~3 GPU-days x 8 GPUs.
IMAGENET = Train("imagenet", gpus=8, gpu_hours=8 * 72)
# DARTS' selection (Liu et al., 2019, Sec. 3.3): every searched cell trained briefly (100 epochs)
# with a held-out validation split of the training set; the best validation accuracy is kept.
DARTS_SELECT = Select("valid", short=Train("cifar10", flags(epochs=100, valid_size=10000), name="valid100",
                                           gpu_hours=6, smoke=flags(valid_size=16)))

EXPERIMENTS = []

# ---------------------------------------------------------------- baselines through our pipeline

# The published DARTS and PC-DARTS cells trained with our shared evaluation protocol: two sanity
# rows of the pipeline every method's train.py uses.
EXPERIMENTS += [
    Row("baselines", "DARTS Table 1", "DARTS_V2", "cifar10", arch="DARTS_V2", train=CIFAR10),
    Row("baselines", "PC-DARTS Table 1", "PC_DARTS_cifar", "cifar10", arch="PC_DARTS_cifar", train=CIFAR10),
    Row("baselines", "DARTS Table 2", "DARTS_V2", "imagenet", arch="DARTS_V2", train=IMAGENET),
    Row("baselines", "PC-DARTS Table 2", "PC_DARTS_image", "imagenet", arch="PC_DARTS_image", train=IMAGENET),
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

# ---------------------------------------------------------------- DARTS-PD

# smoke: one epoch of each stage (stage 2 not to a whole pass), one generation of a few paths,
# the tiny evaluation network in one wide bucket
PD_SMOKE = flags(fair_epochs=1, generations=1, population=4, parents=2, mutations=2, crossovers=2, bn_batches=1,
                 eval_layers=3, eval_init_channels=4, bucket_width=100) + ("--no-whole_passes",)
DARTS_PD = Search("darts_pd", "cifar10", seeds=(0, 1, 2), gpu_days=0.3, smoke=PD_SMOKE)
EXPERIMENTS += [
    Row("darts_pd", "Table 1", "DARTS-PD†(ours)", search=DARTS_PD, train=CIFAR10),
]

# ---------------------------------------------------------------- D-DARTS (Heuillet et al.)

DD_LF = Search("d_darts", "lf-cifar10", flags(w_abl=0), seeds=(0, 1, 2, 3), gpu_days=0.5)
EXPERIMENTS += [
    Row("d_darts", "Table 1", "DD-1", search=DD_LF, genotype="genotype_sparse.json", train=CIFAR10),
    Row("d_darts", "Table 1", "DD-2", search=DD_LF, genotype="genotype_edge.json", train=CIFAR10),
]
