"""The NAS-Bench-201 test accuracy of a cell, in place of training it (Sec. 5.2, Table 4, Figs. 4, 8, 9).

NAS-Bench-201 holds every cell of its space trained with one protocol (200 epochs); the paper reads
the accuracy of the cell a selection found from it ("their performance can be obtained by querying
the database", Sec. 5.2). This script writes what a training of the cell would (summary.json:
`final_top1`, the dataset, the genotype, the evaluation network's size) with that accuracy: the one
the selection recorded in the genotype file (`nb201_test_accuracy`, written by projection.py when the
benchmark was installed), else one looked up in --nb201_benchmark (default
DATA/NAS-Bench-201-v1_0-e61699.pth, with the nas-bench-201 package). `evaluated_by` in summary.json
says that the number was read, not trained. Without the benchmark, `train.py --arch GENOTYPE` trains
the cell with the benchmark's protocol instead.

Usage: python darts_pt/nb201_lookup.py --arch RUN/projection_pt/genotype.json
       [--dataset cifar10|cifar100|imagenet16-120] [--data DIR] [--nb201_benchmark FILE] --save DIR
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import genotypes
from common.data import add_data_args, image_size
from common.network import build_network
from common.utils import add_run_args, check_run, count_madds, count_params, die, log, setup_run, write_json
from darts_pt.train import NB201
from darts_pt.train_search import NB201_FILE, add_nb201_arg, nb201_lookup

# our dataset name -> (the benchmark's, its number of classes)
BENCHMARK_DATASETS = {"cifar10": ("cifar10", 10), "cifar100": ("cifar100", 100),
                      "imagenet16-120": ("ImageNet16-120", 120)}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", required=True, help="a NAS-Bench-201 cell: its genotype.json or |op~0|+... string")
    add_nb201_arg(p)
    add_run_args(p)
    add_data_args(p)
    return p


def recorded_accuracy(arch):
    """The accuracies projection.py stored beside the genotype (`nb201_test_accuracy`), or None."""
    path = Path(arch)
    try:
        return json.loads(path.read_text()).get("nb201_test_accuracy") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.dataset not in BENCHMARK_DATASETS:
        die(f"--dataset {args.dataset}: NAS-Bench-201 has {', '.join(BENCHMARK_DATASETS)}; train the cell with "
            "darts_pt/train.py for another dataset")
    check_run(args, "nb201-lookup")  # every input is checked before the run folder is touched
    try:
        genotype = genotypes.load(args.arch)
    except genotypes.GenotypeError as e:
        die(str(e))
    if genotype.kind != "nb201":
        die(f"--arch {args.arch}: a {genotype.kind} genotype, not a NAS-Bench-201 cell; NAS-Bench-201 holds only "
            "its own cells (train this one with darts_pt/train.py)")
    name, num_classes = BENCHMARK_DATASETS[args.dataset]
    accuracy = recorded_accuracy(args.arch)
    source = f"recorded in {args.arch}"
    if accuracy is None:
        benchmark = Path(args.nb201_benchmark or Path(args.data) / NB201_FILE).expanduser()
        lookup = nb201_lookup(benchmark)
        if lookup is None:
            die(f"no NAS-Bench-201 accuracy for {args.arch}: it needs the benchmark file {benchmark} and the "
                "nas-bench-201 package (pip install nas-bench-201); without them train the cell with "
                f"darts_pt/train.py --arch {args.arch}")
        accuracy, source = lookup(str(genotype)), str(benchmark)
    save = setup_run(args, "nb201-lookup")
    model = build_network(genotype, "cifar", NB201["init_channels"], None, num_classes)
    size = image_size(args)  # 16 on ImageNet16-120
    summary = dict(arch=args.arch, genotype=str(genotype), dataset=args.dataset,
                   final_top1=accuracy[name], nb201_test_accuracy=accuracy,
                   evaluated_by="NAS-Bench-201 (200 epochs)", benchmark=source,
                   params_M=count_params(model), mult_adds_M=count_madds(model, (1, 3, size, size)))
    write_json(save / "summary.json", summary)  # the done-marker, last
    log.info("NAS-Bench-201 test accuracy on %s: %.2f%% (%s)", args.dataset, accuracy[name], source)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
