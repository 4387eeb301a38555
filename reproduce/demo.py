"""The demo of `bash run_all.sh --demo`: what each method finds, beside a random cell and DARTS_V2.

Every method's search runs on the built-in synthetic data at a small size (16x16 images, 256 of
them, 4 epochs, a super-net of 5 cells and 8 channels) with its paper's hyper-parameters otherwise;
each searched cell is then trained from scratch beside two references trained identically: a
random cell of the same space (the DARTS space; `common.genotypes.random_genotype`) and DARTS_V2.
Every training is the same command but for --arch: 2,000 images, 5 epochs, 5 cells of 8 channels,
plain SGD (no auxiliary tower, cutout or drop-path: too few epochs for them to help). The whole
demo takes under 10 minutes on 2 CPU cores; the table is OUT/summary.md. The sizes, what they cost
and how noisy the table is at this size: "The demo" in the README.

The rows are data, as in `reproduce/experiments.py`; `demo(methods)` keeps the searches of some
methods (`run_all.sh --demo --methods msg_das`) and always both references.
"""
from reproduce.registry import Row, Search, Step, Train, flags

TABLE = "Demo: searched cells beside a random cell and DARTS_V2, trained identically (chance: 90% test error)"
SPACE = "darts"  # every method's search space in the demo, and the random cell's

# The search size, the same for every method.
SEARCH = flags(image_size=16, subset=256, epochs=4, layers=5, init_channels=8, batch_size=32, workers=0)
# The training of every row: every flag of the protocol given, so that each method's train.py
# trains exactly what common/train_eval.py does with them (tests/test_demo.py checks it).
TRAIN = Train("synthetic", flags(image_size=16, subset=2000, epochs=5, layers=5, init_channels=8, batch_size=64,
                                 learning_rate=0.1, learning_rate_min=0.0, lr_scheduler="cosine", warmup_epochs=0,
                                 momentum=0.9, weight_decay=3e-4, grad_clip=5.0, auxiliary=False, cutout=False,
                                 drop_path_prob=0.0, label_smooth=0.0, workers=0), name="demo")


def _search(method, extra=(), steps=()):
    return Search(method, "demo", SEARCH + extra, seeds=(0,), dataset="synthetic", steps=steps)


SEARCHED = (
    Row("demo", TABLE, "MSG-DAS", "synthetic", search=_search("msg_das"), train=TRAIN),
    Row("demo", TABLE, "EnTranNAS", "synthetic", search=_search("entrannas"), train=TRAIN),
    # the super-net, then the perturbation-based selection without tuning between the decisions
    # (Sec. 4.2), each measured on the last 32 of the search's 128 validation images (--train_portion
    # 0.875: images 224-255); on all 128 the selection costs 3.7 times the search
    Row("demo", TABLE, "DARTS-PT", "synthetic", train=TRAIN, search=_search("darts_pt", steps=(
        Step("projection_pt", "darts_pt/projection.py", flags(proj_intv=0, train_portion=0.875)),))),
    # stage 1 with alpha frozen for its first epoch (15 of 50 in the paper); stage 2: 4 epochs at the
    # search's batch, not a whole pass over its 2^15 path groups (thousands of epochs); stage 3: 4
    # generations of 4 paths, the evaluation network's size that of TRAIN, in one parameter bucket
    Row("demo", TABLE, "DARTS-PD", "synthetic", train=TRAIN, search=_search("darts_pd", flags(
        begin=1, fair_epochs=4, fair_batch_size=32, generations=4, population=4, parents=2, mutations=2,
        crossovers=2, bn_batches=1, eval_layers=5, eval_init_channels=8, bucket_width=100) + ("--no-whole_passes",))),
    # L_F (DD-1's loss); the DARTS parsing: after 4 epochs no sigmoid weight reaches the paper's 0.8
    Row("demo", TABLE, "D-DARTS", "synthetic", search=_search("d_darts", flags(w_abl=0)),
        genotype="genotype_darts.json", train=TRAIN),
)
REFERENCES = (
    Row("demo", TABLE, f"random cell ({SPACE} space)", "synthetic", arch=f"random:{SPACE}:0", train=TRAIN),
    Row("demo", TABLE, "DARTS_V2 (published)", "synthetic", arch="DARTS_V2", train=TRAIN),
)
DEMO = SEARCHED + REFERENCES


def demo(methods):
    """The demo's rows: the searches of `methods` (method folder names), then both references."""
    return [r for r in SEARCHED if r.search.method in methods] + list(REFERENCES)
