"""BR-NPA pooling vs a B-CNN attention head: training time per batch and peak memory, CPU.

Supplement B.4 of the BR-NPA paper: BR-NPA is faster and lighter than a bilinear attention
head (B-CNN) because it computes its N maps and vectors one after the other, while B-CNN
multiplies N convolutional attention maps with the C feature maps into an (n, N, C, H, W)
tensor before pooling. Both heads here sit on the same small ResNet-style network, with the
same N and the same linear classifier on the N * C pooled features:

- ``brnpa``: :class:`sklearn_caf_torch.brnpa.BRNPAPool2d` (no parameters).
- ``bcnn``: the paper's B-CNN (its Section 4.1): a ResNet basic block, a 1x1 convolution
  to N maps and a ReLU; each map multiplies the features, then global average pooling.
- ``bcnn-einsum``: the same head, pooling with an einsum that never forms the product
  tensor (a lower bound on what a careful B-CNN costs).

Each variant runs in its own subprocess, so that its peak resident memory
(``ru_maxrss``) is its own; the figure reported is the peak minus the resident memory just
before the first training step (model built, data made). Because the allocator's reuse
blurs that figure, the tensors autograd saves for the backward pass during one forward
pass are also counted exactly (``torch.autograd.graph.saved_tensors_hooks``, each storage
once): that is the activation memory a training step holds at its peak. Time is the best
and the median of the timed SGD steps (forward, backward, update) after warm-up steps;
the best is the figure least disturbed by other processes on the machine. Run from the
repository root::

    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 \\
        python benchmarks/bench_brnpa.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

VARIANTS = ("brnpa", "bcnn", "bcnn-einsum")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_variant(variant: str, args: argparse.Namespace) -> dict:
    import torch
    from torch import nn

    from sklearn_caf_torch.brnpa import BRNPAPool2d
    from sklearn_caf_torch.highres import reduce_stride

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    w = args.width

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
            self.layer1 = BasicBlock(w, w)
            self.layer2 = BasicBlock(w, 2 * w, 2)
            self.layer3 = BasicBlock(2 * w, 4 * w, 2)
            self.layer4 = BasicBlock(4 * w, 8 * w, 2)

        def forward(self, x):
            return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))

    class BCNNHead(nn.Module):
        def __init__(self, channels, n_parts, einsum):
            super().__init__()
            self.block = BasicBlock(channels, channels)
            self.maps = nn.Sequential(nn.Conv2d(channels, n_parts, 1), nn.ReLU())
            self.einsum = einsum

        def forward(self, x):
            maps = self.maps(self.block(x))  # (n, N, H, W)
            if self.einsum:
                pooled = torch.einsum("nkhw,nchw->nkc", maps, x) / (x.shape[2] * x.shape[3])
            else:  # as described: the (n, N, C, H, W) product, then average pooling
                pooled = (maps[:, :, None] * x[:, None]).mean(dim=(3, 4))
            return pooled.flatten(1)

    backbone = Backbone()
    if args.highres:
        backbone = reduce_stride(backbone, ("layer3", "layer4"))
    channels = 8 * w
    head = (
        BRNPAPool2d(args.parts)
        if variant == "brnpa"
        else BCNNHead(channels, args.parts, variant == "bcnn-einsum")
    )
    net = nn.Sequential(backbone, head, nn.Linear(args.parts * channels, args.classes)).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.batch,))
    with torch.no_grad():
        feature_shape = tuple(backbone(x[:1]).shape[1:])

    def step():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()

    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nn.functional.cross_entropy(net(x), y)
    saved = sum(seen.values())
    rss_before = _rss_bytes()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    times.sort()
    return {
        "variant": variant,
        "ms_best": 1000 * times[0],
        "ms_median": 1000 * times[len(times) // 2],
        "saved_mib": saved / 2**20,
        "peak_mib": (peak - rss_before) / 2**20,
        "feature_shape": feature_shape,
        "head_params": sum(p.numel() for p in head.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage")
    parser.add_argument("--parts", type=int, default=3, help="N, for both heads")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--highres", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:  # a child process: one variant, JSON on stdout
        print(json.dumps(_run_variant(args.variant, args)))
        return

    import torch

    print(
        f"Small ResNet-style network (4 stages, widths {args.width}-{8 * args.width}), "
        f"N = {args.parts}, batch {args.batch}, {args.size}x{args.size}, SGD training step, "
        f"CPU ({platform.machine()}, {args.threads} threads), torch {torch.__version__}; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps.\n"
    )
    print(
        "| resolution | head | feature maps | head params | ms/batch best (median) "
        "| saved for backward MiB | peak RSS MiB | vs BR-NPA (best time, saved memory) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|")
    for highres in (False, True):
        rows = []
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--variant", variant]
            for key in ("batch", "size", "width", "parts", "classes", "steps", "warmup"):
                cmd += [f"--{key}", str(getattr(args, key))]
            cmd += ["--threads", str(args.threads)] + (["--highres"] if highres else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        base = rows[0]
        for row in rows:
            c, h, w = row["feature_shape"]
            ratio = (
                f"{row['ms_best'] / base['ms_best']:.2f}x time, "
                f"{row['saved_mib'] / base['saved_mib']:.2f}x memory"
            )
            print(
                f"| {'high (layer3, layer4 stride 1)' if highres else 'default'} "
                f"| {row['variant']} | {c}x{h}x{w} | {row['head_params']} "
                f"| {row['ms_best']:.0f} ({row['ms_median']:.0f}) | {row['saved_mib']:.1f} "
                f"| {row['peak_mib']:.0f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
