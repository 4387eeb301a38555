"""How DARTS-PT judges an op or an edge of a super-net, and one decision (Sec. 4.1, Alg. 1, App. A.3).

An op is judged by the super-net's validation accuracy with that op masked out (its weight set to
0, every other weight unchanged): the op whose removal hurts most is the strongest (Sec. 4.1). An
input edge of a node is judged the same way with the whole edge removed (App. A.3). The schedule of
the decisions (Alg. 1: random edge order, tuning in between) is in `projection.py`; SGAS+PT
(`train_search.py --method sgas`) makes its op decisions here too.
"""
import torch
import torch.nn.functional as F

from common.search import frozen_bn_stats
from common.utils import amp_autocast, broadcast_params

TOPOLOGY_RULES = ("top2", "backward")


@torch.no_grad()
def evaluate_supernet(model, loader, weights=None, active=None, amp=False, seed=0, running=False):
    """(top-1 %, loss) of the super-net over `loader`, as DARTS-PT measures it (authors' code): BN in
    training mode (batch statistics), the running statistics left untouched, to score a masked op;
    `running`: in evaluation mode (BN's running statistics), as they log the super-net's accuracy;
    under torchrun every rank first takes rank 0's running statistics (those its checkpoints keep),
    as DDP's forward would. Every call sees the same batches, augmentations and noise draws (`seed`),
    so scores differ only by the masking, and the global random state and the model's mode are left
    as they were."""
    device = next(model.parameters()).device
    was_training = model.training
    if running:
        broadcast_params(model.buffers())
    if was_training == running:  # train() / eval() walk every module of the super-net: only when needed
        model.train(not running)
    loader.sampler.set_epoch(0)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), frozen_bn_stats(model):
            torch.manual_seed(seed)
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with amp_autocast(device, amp):
                    logits = model(x, weights, active).float()
                sums[0] += (logits.argmax(1) == y).sum()
                sums[1] += F.cross_entropy(logits, y, reduction="sum")
                sums[2] += len(y)
    finally:
        if model.training != was_training:
            model.train(was_training)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    return (100 * sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def _score(top1_loss, crit):
    return top1_loss[0] if crit == "acc" else top1_loss[1]


def op_strength(model, cell_type, edge, loader, crit="acc", amp=False):
    """Sec. 4.1: for each op of `edge`, the super-net's validation accuracy (`crit="acc"`, or loss)
    with that op masked out: its weight set to 0, every other weight unchanged. One score per op;
    the op whose removal hurts most (lowest accuracy / highest loss) is the strongest."""
    with torch.no_grad():
        base = model.arch_weights()
    scores = []
    for o in range(len(model.edge_ops[cell_type][edge])):
        weights = dict(base)
        weights[cell_type] = base[cell_type].clone()
        weights[cell_type][edge, o] = 0.0  # ACC\o: o masked out, the other weights not renormalised
        active = dict(model.active)
        active[cell_type] = list(model.active[cell_type])
        active[cell_type][edge] = [p for p in model.active[cell_type][edge] if p != o]
        scores.append(_score(evaluate_supernet(model, loader, weights, active, amp), crit))
    return scores


def edge_strength(model, cell_type, edges, loader, crit="acc", amp=False):
    """App. A.3: for each of `edges`, the super-net's validation accuracy (or loss) with that whole
    edge removed (all its weights 0) and every other edge as it is. One score per edge."""
    with torch.no_grad():
        base = model.arch_weights()
    scores = []
    for e in edges:
        weights = dict(base)
        weights[cell_type] = base[cell_type].clone()
        weights[cell_type][e] = 0.0  # ACC\e
        active = dict(model.active)
        active[cell_type] = list(model.active[cell_type])
        active[cell_type][e] = []
        scores.append(_score(evaluate_supernet(model, loader, weights, active, amp), crit))
    return scores


def strength(scores, measure):
    """Scores turned into "higher is stronger": a removal that lowers accuracy (raises loss) means
    a strong op or edge; for magnitudes, a larger alpha."""
    return [-s for s in scores] if measure == "acc" else list(scores)


def argmax(values, allowed=None):
    """Index of the largest value among `allowed` (all by default); ties keep the lower index."""
    allowed = range(len(values)) if allowed is None else allowed
    return max(allowed, key=lambda i: (values[i], -i))


def _name(model, edge):
    i, j = model.edges[edge]
    return f"{i}<-{j}"


def decide_op(model, ct, edge, loader, selection="pt", crit="acc", amp=False):
    """Alg. 1: score the ops of `edge` (perturbation, `selection="pt"`, or softmax(alpha), "mag"),
    discretize it to the strongest. `none` is never chosen on a DARTS cell (App. A.1.1: it only
    marks topology there); on a NAS-Bench-201 cell it is an op. Returns the decision's record."""
    names = model.edge_ops[ct][edge]
    with torch.no_grad():
        alpha = F.softmax(model.alphas[ct][edge], -1).cpu().tolist()
    if selection == "pt":
        scores, measure = op_strength(model, ct, edge, loader, crit, amp), crit
    else:
        scores, measure = alpha, "alpha"
    allowed = [o for o, n in enumerate(names) if n != "none" or model.num_inputs == 1]
    o = argmax(strength(scores, measure), allowed)  # Alg. 1: o* = arg min_o ACC\o
    model.project_op(ct, edge, o)
    return {"cell": ct, "edge": edge, "name": _name(model, edge), "ops": list(names), "scores": scores,
            "measure": measure, "alpha": alpha, "chosen": names[o]}


def decide_topology(model, ct, node, loader, selection="pt", crit="acc", amp=False, rule="top2", alpha_of=None):
    """App. A.3: keep 2 input edges of `node`, judged by the removal of each (perturbation) or by
    the softmax weight their op had when it was decided (`alpha_of[(ct, edge)]`, magnitude).

    rule "top2" (the authors' `project_edge`): every removal is measured against the full node and
    the two edges whose single removal hurts most are kept. Rule "backward": the edge whose removal
    hurts least is removed for real and the rest measured again, until two remain. The two differ
    when edges interact (the drop of removing two edges is not the sum of the single drops)."""
    kept = [e for e in model.node_edges(node) if not model.removed[ct][e]]
    steps = []
    while len(kept) > 2:
        if selection == "pt":
            scores, measure = edge_strength(model, ct, kept, loader, crit, amp), crit
        else:
            scores, measure = [alpha_of[(ct, e)] for e in kept], "alpha"
        s = strength(scores, measure)
        if rule == "top2":  # the two strongest single edges; the others go together
            top = sorted(range(len(kept)), key=lambda i: (-s[i], i))[:2]
            drop = [e for i, e in enumerate(kept) if i not in top]
        else:  # the weakest edge goes; measure again without it
            drop = [kept[argmax([-v for v in s])]]
        steps.append({"edges": [_name(model, e) for e in kept], "scores": scores, "measure": measure,
                      "removed": [_name(model, e) for e in drop]})
        for e in drop:
            model.remove_edge(ct, e)
            kept.remove(e)
    return {"cell": ct, "node": node, "rule": rule, "steps": steps, "kept": [_name(model, e) for e in kept]}
