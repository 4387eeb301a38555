"""Every table row and figure of the five papers, as data: read it next to the paper's tables.

Each `Row` is one row of a table (its label and dataset as in `paper_results.json`), each `Figure`
one quantitative figure. The vocabulary (`Search`, `Step`, `Select`, `Train`, `Measure`) is in
`reproduce/registry.py`; `bash run_all.sh --plan` lists the stages these entries make.
"""
from dataclasses import replace

from reproduce.registry import Figure, Lookup, Measure, Row, Search, Select, Step, Train, flags

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
# darts_pt/README.md, "Reproducing the paper". Every super-net is trained with four seeds ("four random
# seeds", Sec. 5.1; Tables 3-4 and Sec. 6.2 do not say, we use the same four), then its architecture is
# selected (darts_pt/projection.py, Alg. 1) and trained once with the search's seed. "avg" rows are the
# mean over the four, "best" rows the same trainings' smallest error (the paper's "best" is the best
# of its four trainings: reported, not selected); only the ImageNet cell is chosen, by DARTS' protocol.
# "DARTS" rows are the magnitude (arg-max alpha) cells of the same super-nets (the search's genotype.json).

PT_SEEDS = (0, 1, 2, 3)
OPS_PER_EDGE = {"darts": 7, "s1": 2, "s2": 2, "s3": 3, "s4": 2}  # DARTS' without `none` (App. A.1.1); S1-S4 (A.2)
IMAGES = {"cifar10": 1.0, "cifar100": 1.0, "svhn": 73257 / 50000}  # training images, relative to CIFAR's
# Smoke: the DARTS space's super-nets run on S2 (2 ops per edge instead of 7): a selection evaluates
# the super-net once per op of each of its 14 edges, which at 7 ops is the longest stage of --smoke.
SMOKE_SPACE = flags(search_space="s2")
NB201_EPOCHS = (20, 40, 60, 80, 100)  # the snapshots of Figs. 4, 8 (the authors keep one every 20 epochs)
NB201_EPOCH_HOURS = 0.06  # one epoch of the NAS-Bench-201 super-net (~0.25 GPU-days for 100 epochs)


def pt_cost(space, dataset):
    """GPU-days of a 50-epoch super-net on `space`, or of its selection: DARTS' 0.4 (Table 2: 0.4 for
    DARTS, 0.8 with the selection) for 7 ops per edge, scaled by the ops and the training images."""
    return 0.4 * OPS_PER_EDGE[space] / 7 * IMAGES[dataset]


def projection(name="projection_pt", gpu_days=0.4, **kw):
    """darts_pt/projection.py on each search: the perturbation-based selection (Alg. 1, 5 tuning epochs
    between two decisions), or with `selection="mag"` DARTS+PT-Mag (Sec. 6.2); --proj_intv 1 in smoke."""
    return Step(name, "darts_pt/projection.py", flags(**kw), gpu_hours=24 * gpu_days, smoke=flags(proj_intv=1))


def super_net(space="darts", dataset="cifar10", method="darts", mag=False):
    """DARTS-PT's super-net on a DARTS-cell space (train_search.py --method METHOD --search_space SPACE,
    50 epochs), four seeds, then the PT selection (`mag`: the magnitude one with the same tuning)."""
    name = "-".join(p for p, default in ((method, "darts"), (space, "darts"), (dataset, "cifar10")) if p != default)
    cost = pt_cost(space, dataset)
    step = projection("projection_mag", cost, selection="mag") if mag else projection(gpu_days=cost)
    return Search("darts_pt", name or "darts", flags(method=method, search_space=space), seeds=PT_SEEDS,
                  dataset=dataset, steps=(step,), gpu_days=cost * (0.61 if method == "blank" else 1),  # no alpha step
                  smoke=SMOKE_SPACE if space == "darts" else (), sweep=("search_space",))


def magnitude(search):
    """The same searches without the selection: their genotype.json, DARTS' arg-max alpha."""
    return replace(search, steps=())


def pt_train(dataset):
    """DARTS' evaluation (Sec. 5.1: 20 cells, 36 channels, 600 epochs); for S1-S4 on CIFAR-100 and SVHN 8
    cells, 16 channels (the authors' eval scripts, RobustDARTS' protocol); ~1/12 of the 20-cell cost."""
    if dataset == "cifar10":
        return Train("cifar10", flags(layers=20, init_channels=36), gpu_hours=36)
    return Train(dataset, flags(layers=8, init_channels=16), gpu_hours=3 * IMAGES[dataset])


DARTS_PT = super_net()
SDARTS_RS = super_net(method="sdarts-rs")
PT_C10 = pt_train("cifar10")
# SGAS (App. A.1.3) decides its edges while it trains: its genotype.json is the result (0.29 GPU-days with
# PT, Table 2). Smoke: its 8 decisions, one per epoch.
SGAS_SMOKE = flags(warmup_dec_epoch=0, decision_freq=1, epochs=8)
SGAS_PT = Search("darts_pt", "sgas", flags(method="sgas"), seeds=PT_SEEDS, gpu_days=0.29, smoke=SGAS_SMOKE)
SGAS_MAG = Search("darts_pt", "sgas-mag", flags(method="sgas", selection="mag"), seeds=PT_SEEDS, gpu_days=0.25,
                  smoke=SGAS_SMOKE)
EXPERIMENTS += [
    # Table 2: the base methods' magnitude cells, then PT on the same super-nets
    Row("darts_pt", "Table 2", "DARTS (Liu et al., 2019)", search=magnitude(DARTS_PT), train=PT_C10),
    Row("darts_pt", "Table 2", "SDARTS-RS (Chen & Hsieh, 2020)", search=magnitude(SDARTS_RS), train=PT_C10),
    Row("darts_pt", "Table 2", "SGAS (Cri 1. avg) (Li et al., 2020)", search=SGAS_MAG, train=PT_C10),
    Row("darts_pt", "Table 2", "DARTS+PT (avg)*", search=DARTS_PT, train=PT_C10),
    Row("darts_pt", "Table 2", "DARTS+PT (best)", search=DARTS_PT, train=PT_C10),
    Row("darts_pt", "Table 2", "SDARTS-RS+PT (avg)*", search=SDARTS_RS, train=PT_C10),
    Row("darts_pt", "Table 2", "SDARTS-RS+PT (best)", search=SDARTS_RS, train=PT_C10),
    Row("darts_pt", "Table 2", "SGAS+PT (Crit.1 avg)*", search=SGAS_PT, train=PT_C10),
    Row("darts_pt", "Table 2", "SGAS+PT (Crit.1 best)", search=SGAS_PT, train=PT_C10),
]
# Table 3: S1-S4 (searched and evaluated on the same dataset), the columns DARTS, DARTS+PT, DARTS+PT (fix
# alpha); the space is in the row label
for dataset in ("cifar10", "cifar100", "svhn"):
    for space in ("s1", "s2", "s3", "s4"):
        S, train = space.upper(), pt_train(dataset)
        EXPERIMENTS += [
            Row("darts_pt", "Table 3", f"{S}: DARTS", dataset, search=magnitude(super_net(space, dataset)),
                train=train),
            Row("darts_pt", "Table 3", f"{S}: DARTS+PT (Ours)", dataset, search=super_net(space, dataset), train=train),
            Row("darts_pt", "Table 3", f"{S}: DARTS+PT (fix α)*", dataset, search=super_net(space, dataset, "blank"),
                train=train)]


# Table 4 and Figs. 4, 8, 9: NAS-Bench-201 (Sec. 5.2). 100-epoch super-nets keeping a snapshot every 20
# epochs; each point selects on one snapshot (--from_epoch E; the final one is E = 100) with N tuning epochs
# between decisions (Fig. 9 varies N; 5 elsewhere). DARTS' cell of a snapshot is its magnitude selection
# without tuning. A cell is evaluated by the benchmark when DATA/NAS-Bench-201-v1_0-e61699.pth is there
# (darts_pt/nb201_lookup.py: the accuracy the selection recorded from it), else trained with the
# benchmark's protocol (train.py: 200 epochs, ~2 GPU-hours); the summary says which.
NB201_FILE = "NAS-Bench-201-v1_0-e61699.pth"  # where the DARTS-PT scripts look for it (--nb201_benchmark)
NB201_SMOKE = flags(nb201_cells=1, epochs=2, save_epochs=(1, 2))


def nb201_super_net(dataset="cifar10", method="darts"):
    """DARTS-PT's super-net on NAS-Bench-201 (100 epochs, a snapshot every 20), four seeds, no selection yet."""
    name = "-".join(p for p, default in ((method, "darts"), ("nb201", ""), (dataset, "cifar10")) if p != default)
    epochs = 100 * (0.61 if method == "blank" else 1)  # the blank super-net has no alpha step
    return Search("darts_pt", name, flags(method=method, search_space="nb201", save_epochs=NB201_EPOCHS),
                  seeds=PT_SEEDS, dataset=dataset, gpu_days=epochs * NB201_EPOCH_HOURS / 24, smoke=NB201_SMOKE)


def nb201_select(search, epoch=100, proj_intv=5, mag=False):
    """The search with one selection on its snapshot after `epoch` epochs: PT with `proj_intv` tuning epochs
    (6 decisions, a validation pass per op), or DARTS' magnitude selection (`mag`)."""
    if mag:
        step = Step(f"magnitude_epoch{epoch}", "darts_pt/projection.py",
                    flags(selection="mag", proj_intv=0, from_epoch=epoch), gpu_hours=NB201_EPOCH_HOURS,
                    smoke=flags(from_epoch=2))
    else:
        step = Step(f"projection_pt_epoch{epoch}" + (f"_intv{proj_intv}" if proj_intv != 5 else ""),
                    "darts_pt/projection.py", flags(from_epoch=epoch, proj_intv=proj_intv),
                    gpu_hours=(5 * proj_intv + 10) * NB201_EPOCH_HOURS, smoke=flags(from_epoch=2, proj_intv=1))
    return replace(search, steps=(step,))


def nb201_train(dataset):
    return Train(dataset, gpu_hours=2, lookup=Lookup(NB201_FILE, "darts_pt/nb201_lookup.py",
                                                     file_flag="--nb201_benchmark"))


NB201, NB201_BLANK, NB201_C10 = nb201_super_net(), nb201_super_net(method="blank"), nb201_train("cifar10")
# Table 4's NAS-Bench-201 cells are also the last points of Figs. 4 and 8 (epoch 100) and Fig. 9's N = 5
NB201_ROWS = {series: Row("darts_pt", "Table 4", f"NAS-Bench-201: {series}", search=search, train=NB201_C10,
                          x={"epoch": 100, "proj_intv": 5, "series": f"{series} (CIFAR-10)"})
              for series, search in (("DARTS", nb201_select(NB201, mag=True)), ("DARTS+PT", nb201_select(NB201)),
                                     ("DARTS+PT (fix α)", nb201_select(NB201_BLANK)))}
EXPERIMENTS += [
    # Table 4: the DARTS space (Table 2's stages) and NAS-Bench-201, the columns DARTS, DARTS+PT, DARTS+PT (fix alpha)
    Row("darts_pt", "Table 4", "DARTS space: DARTS", search=magnitude(DARTS_PT), train=PT_C10),
    Row("darts_pt", "Table 4", "DARTS space: DARTS+PT", search=DARTS_PT, train=PT_C10),
    Row("darts_pt", "Table 4", "DARTS space: DARTS+PT (fix α)", search=super_net(method="blank"), train=PT_C10),
    *NB201_ROWS.values(),
    # Sec. 6.2: the tuning of PT with the magnitude choice of each op, on Table 2's super-nets
    Row("darts_pt", "Sec. 6.2", "DARTS+PT-Mag", search=super_net(mag=True), train=PT_C10),
    # App. A.8: one of Table 2's DARTS+PT cells on ImageNet (mobile setting), chosen by DARTS' protocol
    Row("darts_pt", "App. A.8", "DARTS+PT", "imagenet", search=DARTS_PT, select=DARTS_SELECT, train=IMAGENET),
]

# Figs. 3 and 6 on S2, the authors' seed 2 (Table 3's S2 super-net with that seed). Fig. 3: mean(alpha_skip -
# alpha_conv) (softmaxed, over the 28 edges) against the super-net's validation top-1, per search epoch.
# Fig. 6: the super-net's validation top-1 through the selection (the projection's metrics.jsonl, one record
# per tuning epoch), DARTS+PT against DARTS+PT-Mag. Smoke: 3 search epochs, so that Fig. 3 has a curve.


def s2_seed2(mag=False):
    return replace(super_net("s2", mag=mag), seeds=(2,), smoke=flags(epochs=3))


PT_FIG3 = Row("darts_pt", "Fig. 3", "S2: DARTS super-net", search=magnitude(s2_seed2()))
PT_FIG6 = (Row("darts_pt", "Fig. 6", "S2: DARTS+PT", search=s2_seed2()),
           Row("darts_pt", "Fig. 6", "S2: DARTS+PT-Mag", search=s2_seed2(mag=True)))
EXPERIMENTS += [
    PT_FIG3,
    Figure("darts_pt", "Fig. 3", "mean(α_skip - α_conv) (softmaxed) vs. valid top-1, S2", "curves", (PT_FIG3,),
           xkey="valid_top1", y=("mean_skip_minus_conv_all",)),
    *PT_FIG6,
    Figure("darts_pt", "Fig. 6", "valid top-1 through the selection, S2", "curves", PT_FIG6,
           y=("valid_top1",), curves_of="steps"),
]
# Sec. 3 (darts_pt/analysis.py) on the super-nets above, nothing searched again. Figs. 1, 2, 7: per op of an
# edge, softmax(alpha) beside the discretization accuracy at convergence (the edge discretized to the op, 5
# tuning epochs, validation top-1); Fig. 1: 3 random edges of Table 2's seed-0 DARTS super-net; Fig. 7: one
# random edge of each of 6 super-nets (Table 2's four seeds and two more in the same folders); Fig. 2: the 14
# normal edges of the S2 super-net of Figs. 3 and 6. Table 1: the seed-0 super-net's test top-1 before and
# after swapping two random edges in every cell (10 draws). Smoke: 1 edge, 1 tuning epoch, 1 draw. GPU-hours:
# one tuning epoch per op costs what a search epoch does (pt_cost / 50 epochs).


def analysis(name, command, *fl, keys, gpu_hours=0.0, smoke=()):
    return Measure(name, "darts_pt/analysis.py", (command, *fl), inputs=(("--search_dir", "searches"),), keys=keys,
                   gpu_hours=gpu_hours, smoke=smoke)


def strength_row(fig, label, search, name, *fl, space="darts", ops_epochs=0, keys=("edges", "same_choice")):
    """A row of Figs. 1, 2, 7: analysis.py strength on `search`; `ops_epochs` edges x ops, each tuned 5 epochs."""
    hours = ops_epochs * 5 * 24 * pt_cost(space, "cifar10") / 50
    return Row("darts_pt", fig, label, search=search, measure=(analysis(
        name, "strength", *fl, keys=keys, gpu_hours=hours, smoke=flags(tune_epochs=1) + fl[:1] + ("1",)),))


PT_FIG1 = strength_row("Fig. 1", "DARTS super-net: 3 random edges", replace(magnitude(DARTS_PT), seeds=(0,)),
                       "strength-fig1", "--random_edges", "3", ops_epochs=3 * 7)
PT_FIG7 = tuple(strength_row("Fig. 7", f"DARTS super-net seed {seed}: 1 random edge",
                             replace(magnitude(DARTS_PT), seeds=(seed,)), f"strength-fig7-s{seed}", "--random_edges",
                             "1", ops_epochs=7) for seed in range(6))
PT_FIG2 = strength_row("Fig. 2", "S2: DARTS super-net, all normal edges", magnitude(s2_seed2()), "strength-fig2",
                       "--edges", "all", space="s2", ops_epochs=14 * 2,
                       # Sec. 3.1: alpha picks skip_connect on 12 of 14 edges, the accuracy sep_conv_3x3 on half
                       keys=("edges", "same_choice", *(f"{by}_picks_{op}" for by in ("alpha", "accuracy")
                                                       for op in ("skip_connect", "sep_conv_3x3"))))
EXPERIMENTS += [
    PT_FIG1,
    Figure("darts_pt", "Fig. 1", "softmax(α) vs. discretization accuracy at convergence, 3 random edges", "edges",
           (PT_FIG1,)),
    *PT_FIG7,
    Figure("darts_pt", "Fig. 7", "softmax(α) vs. discretization accuracy at convergence, 6 super-nets", "edges",
           PT_FIG7),
    PT_FIG2,
    Figure("darts_pt", "Fig. 2", "op chosen by α vs. by discretization accuracy at convergence, S2", "edges",
           (PT_FIG2,)),
    Row("darts_pt", "Table 1", "DARTS super-net", search=replace(magnitude(DARTS_PT), seeds=(0,)),
        measure=(analysis("shuffle", "shuffle", keys=("test_top1_before", "test_top1_after", "test_top1_after_std"),
                          gpu_hours=0.2, smoke=flags(repeats=1)),)),
]
# Figs. 4 and 8: the test error of the cell selected on the snapshot after E epochs, on CIFAR-10, CIFAR-100
# and ImageNet16-120 (with --imagenet16 DIR), one series per dataset; Fig. 4: DARTS (its magnitude
# selection) and DARTS+PT; Fig. 8: DARTS+PT (fix alpha).
PT_SNAPSHOTS = {"Fig. 4": [], "Fig. 8": []}
for dataset, D in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100"), ("imagenet16-120", "ImageNet16-120")):
    darts, blank, train = nb201_super_net(dataset), nb201_super_net(dataset, "blank"), nb201_train(dataset)
    for fig, series, search, mag in (("Fig. 4", "DARTS", darts, True), ("Fig. 4", "DARTS+PT", darts, False),
                                     ("Fig. 8", "DARTS+PT (fix α)", blank, False)):
        PT_SNAPSHOTS[fig] += [NB201_ROWS[series] if (dataset, e) == ("cifar10", 100) else
                              Row("darts_pt", fig, f"NAS-Bench-201 epoch {e}: {series}", dataset, train=train,
                                  search=nb201_select(search, e, mag=mag), x={"epoch": e, "series": f"{series} ({D})"})
                              for e in NB201_EPOCHS]
# Fig. 9: DARTS+PT on NAS-Bench-201 (CIFAR-10) against N, the tuning epochs between two decisions
PT_FIG9 = [NB201_ROWS["DARTS+PT"] if n == 5 else
           Row("darts_pt", "Fig. 9", f"NAS-Bench-201 proj_intv {n}: DARTS+PT", search=nb201_select(NB201, proj_intv=n),
               train=NB201_C10, x={"epoch": 100, "proj_intv": n, "series": "DARTS+PT (CIFAR-10)"})
           for n in (0, 1, 2, 5, 10)]
EXPERIMENTS += [
    *(r for r in PT_SNAPSHOTS["Fig. 4"] if r.table != "Table 4"),
    Figure("darts_pt", "Fig. 4", "NAS-Bench-201 test error vs. snapshot epoch", "points",
           tuple(PT_SNAPSHOTS["Fig. 4"]), xkey="epoch"),
    *(r for r in PT_SNAPSHOTS["Fig. 8"] if r.table != "Table 4"),
    Figure("darts_pt", "Fig. 8", "NAS-Bench-201 test error vs. snapshot epoch, fix α", "points",
           tuple(PT_SNAPSHOTS["Fig. 8"]), xkey="epoch"),
    *(r for r in PT_FIG9 if r.table != "Table 4"),
    Figure("darts_pt", "Fig. 9", "NAS-Bench-201 test error vs. tuning epochs", "points", tuple(PT_FIG9),
           xkey="proj_intv"),
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
# the alphas) and first-order DARTS (DARTS-PT's super-net of Table 2 with D-DARTS' seed 2: the same folder).
DD_FIG5 = (Row("d_darts", "Fig. 5", "D-DARTS", search=DD_LT_C10),
           Row("d_darts", "Fig. 5", "FairDARTS", search=dd_search("fair-c10", share_alphas=True, w_abl=0, w01=5,
                                                                  arch_learning_rate_min=3e-3)),
           Row("d_darts", "Fig. 5", "DARTS", search=replace(magnitude(DARTS_PT), seeds=(2,))))
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
