"""How alike are a Rein model's linked object queries? (the README's analysis of linked Rein in the bench)

    python -m benchmarks.rein_queries RUN_DIR [RUN_DIR ...]

For each run folder (or a fresh, untrained model with ``--init CONFIG``) prints the number of queries, their
mean / min / max pairwise cosine similarity, the number of groups of near-identical queries (greedy, cosine
above 0.95) and the range of their norms. Only for Rein with ``model.adapter.link: true``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

GROUP_COSINE = 0.95


def query_stats(model: torch.nn.Module) -> dict:
    """Statistics of the linked queries of ``model``'s Rein adapter."""
    adapter = getattr(model, "adapter", None)
    queries = adapter.queries() if adapter is not None and hasattr(adapter, "queries") else None
    if queries is None:
        raise ValueError("the model has no Rein-linked queries (model.adapter.name: rein with link: true)")
    with torch.no_grad():
        q = queries.detach().float()
        unit = F.normalize(q, dim=-1)
        cos = unit @ unit.T
        off = cos[~torch.eye(len(q), dtype=torch.bool)]
        left, groups = set(range(len(q))), []
        while left:
            i = min(left)
            group = {j for j in left if cos[i, j] > GROUP_COSINE}
            groups.append(len(group))
            left -= group
        norms = q.norm(dim=-1)
    return {"queries": len(q), "mean_cosine": off.mean().item(), "min_cosine": off.min().item(),
            "max_cosine": off.max().item(), "groups": len(groups), "largest_group": max(groups),
            "min_norm": norms.min().item(), "max_norm": norms.max().item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders (dgseg train / bench outputs)")
    parser.add_argument("--init", metavar="CONFIG", help="also a freshly initialised model of this config")
    parser.add_argument("--seed", type=int, default=0, help="torch seed for --init")
    args = parser.parse_args(argv)
    if not args.runs and not args.init:
        parser.error("give run folders, --init CONFIG, or both")
    models = []
    if args.init:
        import dgseg

        torch.manual_seed(args.seed)
        from dgseg.config import load_config

        models.append((f"{args.init} (init, seed {args.seed})", dgseg.build_model(load_config(args.init))))
    from dgseg.engine.inference import load_model

    models += [(run, load_model(run)[0]) for run in args.runs]
    for name, model in models:
        s = query_stats(model)
        print(f"{name}: {s['queries']} queries, cosine mean {s['mean_cosine']:.3f} (min {s['min_cosine']:.3f}, "
              f"max {s['max_cosine']:.3f}), {s['groups']} groups at cosine > {GROUP_COSINE} (largest "
              f"{s['largest_group']}), norms {s['min_norm']:.1f}-{s['max_norm']:.1f}")
    return 0


if __name__ == "__main__":
    from dgseg.errors import run_main

    sys.exit(run_main("python -m benchmarks.rein_queries", main))
