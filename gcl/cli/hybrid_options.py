"""Hybrid (dense + BM25) options shared by ``gcl evaluate`` and ``gcl search``; defaults from
:class:`gcl.index.hybrid.HybridParams`."""

from __future__ import annotations

import argparse

from gcl.errors import ConfigError


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_fusion_args(g):
    """``--alpha`` and ``--k-rrf``; returns the fusion names and the defaults."""
    from gcl.index.hybrid import FUSIONS, HybridParams

    d = HybridParams()
    g.add_argument("--alpha", type=_unit_float, default=d.alpha,
                   help=f"convex fusion: weight of the dense score, lexical gets 1 - alpha (default {d.alpha})")
    g.add_argument("--k-rrf", type=_non_negative, default=d.k_rrf,
                   help=f"rrf fusion: score = sum of 1/(k_rrf + rank) (default {d.k_rrf:g})")
    return FUSIONS, d


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hybrid lexical + dense (docs/evaluation.md)")
    fusions, _ = add_fusion_args(g)
    g.add_argument("--hybrid", choices=fusions, default=None,
                   help="fuse the dense retriever (--model or --embeddings) with BM25: rrf (reciprocal rank "
                        "fusion) or convex (alpha * min-max dense + (1 - alpha) * min-max BM25)")


def params(args, fusion: str):
    from gcl.index.hybrid import HybridParams

    return HybridParams(fusion=fusion, alpha=args.alpha, k_rrf=args.k_rrf)


def check_fusion_used(args, active: bool, needs: str) -> None:
    """``--alpha`` / ``--k-rrf`` changed while no fusion runs is a mistake, not something to ignore."""
    from gcl.index.hybrid import HybridParams

    d = HybridParams()
    changed = [flag for flag, value, default in (("--alpha", args.alpha, d.alpha), ("--k-rrf", args.k_rrf, d.k_rrf))
               if value != default]
    if changed and not active:
        raise ConfigError(f"{' and '.join(changed)} only apply with {needs}")


def evaluate_retriever(args, retriever, label: str):
    """``(retriever, label)``, wrapped in a :class:`HybridRetriever` when ``--hybrid`` is given."""
    check_fusion_used(args, args.hybrid is not None, "--hybrid rrf|convex")
    if args.hybrid is None:
        return retriever, label
    if args.bm25:
        raise ConfigError("--hybrid fuses a dense retriever with BM25: give --model or --embeddings, not --bm25")
    from gcl.evaluation.retrievers import BM25Retriever, HybridRetriever

    p = params(args, args.hybrid)
    setting = f"alpha={p.alpha:g}" if p.fusion == "convex" else f"k_rrf={p.k_rrf:g}"
    return HybridRetriever(retriever, BM25Retriever(), p), f"hybrid-{p.fusion}({label}+bm25, {setting})"
