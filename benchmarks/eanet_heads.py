"""What the EANet head's mixer costs alone, over feature-map sizes: EA block vs SDPA block.

The mixer of ``eanet_resnet26_small``'s head (128 channels): the EA block
(:class:`~beyond_attention.layers.external_attention.ExternalAttentionBlock2d`, S = 32
memory slots; EA paper, Guo et al., arXiv:2105.02358) and the SDPA comparison block
(:class:`~beyond_attention.models.eanet.SelfAttentionBlock2d`, 8 heads), on (B, 128, h, w)
maps; h = w = input size / 8 (output stride 8). Per size: parameters, forward
multiply-accumulates (:func:`~beyond_attention.bench.counting.forward_flops`; softmax and
normalisations not counted), forward latency (eval, no autograd), forward + backward
latency and the bytes the training forward saves for backward
(:func:`~beyond_attention.bench.memory.activation_bytes`). Prints a markdown table.

Run: ``python benchmarks/eanet_heads.py [--sizes 16 32 64] [--batch 1] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import torch

from beyond_attention.bench.counting import forward_flops
from beyond_attention.bench.memory import activation_bytes
from beyond_attention.bench.timing import (
    forward_backward_callable,
    forward_callable,
    time_callable,
)
from beyond_attention.models.eanet import make_head_mixer
from beyond_attention.tables import fmt_bytes, fmt_num, format_table

CHANNELS, MEMORY = 128, 32  # eanet_resnet26_small: head_width 128, memory_size 32


def measure(kind: str, size: int, batch: int, repeats: int) -> list[object]:
    torch.manual_seed(0)
    block = make_head_mixer(kind, CHANNELS, MEMORY)
    x = torch.randn(batch, CHANNELS, size, size)
    params = sum(p.numel() for p in block.parameters())
    macs = forward_flops(block.eval(), (x,))["flops"] / 2
    fwd = time_callable(forward_callable(block, [x]), warmup=1, repeats=repeats)
    block.train()
    xg = x.detach().requires_grad_(True)
    fb = time_callable(forward_backward_callable(block, [xg], list(block.parameters())),
                       warmup=1, repeats=repeats)
    act = activation_bytes(block, [xg]).bytes
    return [kind, f"{size}x{size}", f"{size * size:,}", f"{params:,}", fmt_num(macs / 1e6),
            fmt_num(fwd.median), fmt_num(fb.median), fmt_bytes(act)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(kind, s, args.batch, args.repeats)
            for kind in ("external", "self") for s in args.sizes]
    print(f"batch {args.batch}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print(format_table(["head mixer", "map", "tokens", "params", "MMACs", "forward ms",
                        "fwd+bwd ms", "activations"], rows, markdown=True))


if __name__ == "__main__":
    main()
