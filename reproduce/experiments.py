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
# Every row as entrannas/README.md, "Reproducing the paper", gives it; train_search.py's defaults are
# Sec. 4.2's (CIFAR-10) and Sec. 4.3's (ImageNet: batch 1024 on 8 GPUs, lambda 0.2 for DST).

FIVE = (0, 1, 2, 3, 4)  # "We run our search for 5 times"; "5 independent runs" of the evaluation (Sec. 4.2)
SIX = (0, 1, 2, 3, 4, 5)  # Table 2: "for six times with different seeds, and retrain these searched architectures"


def entrannas(name, seeds=(0,), dataset="cifar10", gpu_days=0.06, smoke=(), **kw):
    """An EnTranNAS search; `gpu_days` is the paper's cost (Tables 6, 7: all 8 GPUs on ImageNet)."""
    return Search("entrannas", name, flags(**kw), seeds=seeds, dataset=dataset,
                  gpus=8 if dataset == "imagenet" else 1, gpu_days=gpu_days, smoke=smoke)


# Smoke: a one-step DST search keeps every connection (p_hat ~ 1 > t = 0.5 while alpha is nearly
# uniform), whose cell is 12 times the work of a finished search's; a low temperature prunes like one.
DST_SMOKE = flags(tau=1e-4)


def en_dst(seeds):
    """EnTranNAS-DST on CIFAR-10 (Table 2, Table 6); lambda 0.1, the value of the search the paper shows."""
    return entrannas("dst", seeds, gpu_days=0.1, smoke=DST_SMOKE, dst=True, dst_lambda=0.1)


def en_dst_imagenet(lam, seeds=(0,)):
    """EnTranNAS-DST searched on ImageNet with the lambda of Eq. (11) (Table 4; Table 7's † is 0.2)."""
    return entrannas(f"dst-imagenet-{lam}", seeds, "imagenet", 2.1, DST_SMOKE, dst=True, dst_lambda=lam)


# "choose the architecture with the best validation accuracy" (Sec. 4.2, Table 7 †): the child-net's
# top-1 on the search's own validation half, recorded after the last epoch (never the test set).
ENTRANNAS_BEST = Select("search:childnet_valid_top1")
CIFAR10_X5 = Train("cifar10", seeds=FIVE, gpu_hours=36)
RETRAIN = Train("cifar10", seeds=(0,), gpu_hours=36)  # Table 2: each searched architecture trained once

# Table 1: where the Engine-cells sit; the super-net's and its child-net's clean validation top-1,
# logged by each search after its last epoch. "all (DARTS)" is --darts (no sharing, no bottleneck, tau 1).
EN_DARTS = dict(darts=True, gpu_days=0.73)  # Table 3: DARTS (1st order), 0.73 GPU-day at batch 64
TABLE1 = (("all (DARTS)", dict(EN_DARTS, name="darts")),
          ("one half", dict(name="engine-half", engine="half", gpu_days=0.1)),  # cost not given: an estimate
          ("last", dict(name="engine-last", engine="last")),
          ("first", dict(name="plain")))
EXPERIMENTS += [Row("entrannas", "Table 1", label, search=entrannas(**kw),
                    logged=("supernet_valid_top1", "childnet_valid_top1")) for label, kw in TABLE1]


# Table 2: Kendall tau between the super-net accuracies of six searches and their retrained accuracies.
def kendall(name, *extra, search_file=()):
    """consistency.py kendall over the row's searches (or a folder in each) and their retrainings, in seed order."""
    return Measure(f"kendall-{name}", "entrannas/consistency.py", ("kendall", *extra), keys=("kendall_tau",),
                   inputs=(("--search", "searches", *search_file), ("--retrained", "trainings")))


# PC-DARTS is DARTS-PD's stage 1 (darts_pd/ may not be imported from entrannas/, but its run folders can be
# read): its super-net accuracy is the `valid_top1` it logs last; its genotypes train with darts_pd/train.py.
PC_DARTS = Search("darts_pd", "pc-darts", flags(stage=1), seeds=SIX, gpu_days=0.1, done="stage1/summary.json")
EXPERIMENTS += [
    Row("entrannas", "Table 2", "DARTS", search=entrannas("darts", SIX, **EN_DARTS), train=RETRAIN,
        measure=(kendall("darts"),)),
    Row("entrannas", "Table 2", "PC-DARTS", search=PC_DARTS, genotype="stage1/genotype.json", train=RETRAIN,
        measure=(kendall("pc-darts", "--supernet_key", "valid_top1", search_file=("stage1",)),)),
    Row("entrannas", "Table 2", "EnTranNAS", search=entrannas("plain", SIX), train=RETRAIN,
        measure=(kendall("entrannas"),)),
    Row("entrannas", "Table 2", "EnTranNAS-DST", search=en_dst(SIX), train=RETRAIN,
        measure=(kendall("entrannas-dst"),)),
]

# Table 3: memory at batch 64, the largest batch that fits a GTX 1080 Ti (11 GB; as a multiple of 64) and
# the search cost there, one configuration of bench/search_cost.py per row (fresh processes on one GPU).
# Smoke: a tiny super-net under a 1 MB limit that nothing fits, one try (the plumbing only).
TABLE3_SMOKE = flags(device="cpu", threads=1, layers=3, init_channels=4, image_size=8, batch_size=4, warmup=1,
                     repeats=1, memory_limit_MB=1)
for label, name, config in (("DARTS (1st order)", "darts", "entrannas darts-like"),
                            ("+Engine&Transit-cell", "engine-transit", "entrannas +engine/transit"),
                            ("+feature sharing", "feature-sharing", "entrannas +feature sharing"),
                            ("+bottleneck", "bottleneck", "entrannas +bottleneck")):
    EXPERIMENTS.append(Row("entrannas", "Table 3", label, measure=(Measure(
        f"table3-{name}", "-m", ("bench.search_cost", *flags(device="cuda", only=config, max_batch=True,
                                                            memory_limit_MB=11264)),
        keys=("memory_GB", "batch_multiple", "search_days_doubling"), gpu_hours=0.5, smoke=TABLE3_SMOKE),)))

# Table 4 and Fig. 5: EnTranNAS-DST searched on ImageNet with lambda 0.2 / 0.1 / 0.05, each architecture
# trained on ImageNet (Sec. 4.3); the edges of the normal and reduction cells as the search logged them.
TABLE4 = tuple(Row("entrannas", "Table 4", f"EnTranNAS-DST (λ = {lam})", "imagenet", search=en_dst_imagenet(lam),
                   train=IMAGENET, logged=("edges_normal", "edges_reduce")) for lam in (0.2, 0.1, 0.05))
EXPERIMENTS += [*TABLE4,
                Figure("entrannas", "Fig. 5 (left)", "ImageNet top-1 error vs parameters",
                       "points", TABLE4, xkey="params_M"),
                Figure("entrannas", "Fig. 5 (right)", "ImageNet top-1 error vs multiply-adds",
                       "points", TABLE4, xkey="mult_adds_M")]


# Table 5: DeepLabV3 on Pascal VOC 2012 (entrannas/segmentation.py) on ImageNet-trained backbones: Table 4's
# networks, DARTS' and NASNet-A's cells trained with the same ImageNet protocol, torchvision's ResNet-50.
# Smoke: the backbone starts random (a smoke training's CIFAR-sized checkpoint cannot seed it).
SEG_SMOKE = flags(image_size=16, subset=16, iterations=2, batch_size=4, bn_momentum=0.1, workers=0, layers=3,
                  init_channels=4)
BACKBONE = ("--backbone", "trainings", "checkpoint.pt")


def segmentation(name, *fl, inputs=(BACKBONE,), smoke_inputs=(), smoke=()):
    """segmentation.py on VOC 2012 with the row's ImageNet checkpoint as the backbone (Table 5's protocol)."""
    return Measure(f"seg-{name}", "entrannas/segmentation.py", fl, inputs=inputs, keys=("miou",), dataset="voc",
                   gpu_hours=10, smoke=SEG_SMOKE + smoke, smoke_inputs=smoke_inputs)


GENOTYPE = ("--arch", "searches", "genotype.json")
EXPERIMENTS += [
    Row("entrannas", "Table 5", "ResNet-50", "voc", measure=(segmentation(
        "resnet50", *flags(backbone_model="resnet50", pretrained=True), inputs=(), smoke=flags(pretrained=False)),)),
    Row("entrannas", "Table 5", "NASNet-A", "voc", arch="NASNet", train=IMAGENET,
        measure=(segmentation("nasnet", "--arch", "NASNet"),)),
    Row("entrannas", "Table 5", "DARTS", "voc", arch="DARTS_V2", train=IMAGENET,
        measure=(segmentation("darts", "--arch", "DARTS_V2"),)),
    *(Row("entrannas", "Table 5", f"EnTranNAS-DST (λ = {lam})", "voc", search=en_dst_imagenet(lam), train=IMAGENET,
          measure=(segmentation(f"dst-{lam}", inputs=(GENOTYPE, BACKBONE), smoke_inputs=(GENOTYPE,)),))
      for lam in (0.2, 0.1, 0.05)),
]

# Tables 6 and 7: the best of five searches (Sec. 4.2; Table 7 †), trained five times on CIFAR-10
# (Sec. 4.2) or once on ImageNet (Sec. 4.3; the paper prints single numbers there).
EN_PLAIN = entrannas("plain", FIVE)
EXPERIMENTS += [
    Row("entrannas", "Table 6", "EnTranNAS + cutout", search=EN_PLAIN, select=ENTRANNAS_BEST, train=CIFAR10_X5),
    Row("entrannas", "Table 6", "EnTranNAS-DST + cutout", search=en_dst(FIVE), select=ENTRANNAS_BEST,
        train=CIFAR10_X5),
    Row("entrannas", "Table 6", "EnTranNAS (12 operations) + cutout",
        search=entrannas("ext", FIVE, gpu_days=0.07, search_space="entrannas_ext"), select=ENTRANNAS_BEST,
        train=CIFAR10_X5),
    Row("entrannas", "Table 7", "EnTranNAS (CIFAR-10)", "imagenet", search=EN_PLAIN, select=ENTRANNAS_BEST,
        train=IMAGENET),
    Row("entrannas", "Table 7", "EnTranNAS (ImageNet)", "imagenet",
        search=entrannas("imagenet", dataset="imagenet", gpu_days=1.9), train=IMAGENET),
    Row("entrannas", "Table 7", "EnTranNAS-DST (ImageNet) †", "imagenet", search=en_dst_imagenet(0.2, FIVE),
        select=ENTRANNAS_BEST, train=IMAGENET),
]

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
