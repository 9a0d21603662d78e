"""What catching divergence costs: a training epoch of the walkthrough flow with the Trainer's EpochLoss (per-task sums
and counts, plus on-device non-finite flags and the first bad step) against the same epoch with a baseline accumulator
that keeps only the per-task sums and counts (what the trainer did before, and the least an epoch loss needs).

Both run in this process on the same data, model and optimizer; the ratio is the tracking's overhead.

usage: python benchmarks/bench_nonfinite_tracking.py [--batch-size 64] [--n 4096] [--epochs 3] [--device cpu]
"""
import argparse
import time

import torch

import dnn_cool.train as train
from dnn_cool import FlowDataset, Trainer, make_synthetic, synthetic_project
from dnn_cool.metrics import float_dtype


class SumsAndCounts(train.EpochLoss):
    "The baseline: per-task sums and counts on the device, one sync at the end; no non-finite tracking."
    def update(self, breakdown, loss, batch_size, step=0):
        paths = list(breakdown.per_sample)
        dt = float_dtype(loss.device)
        sums = torch.stack([breakdown.per_sample[p].detach().to(dt).sum() for p in paths])
        counts = torch.stack([breakdown.counts[p].detach().to(dt) for p in paths])
        if self.paths is None:
            self.paths, self.sums, self.counts = paths, sums, counts
            self.bad = torch.zeros_like(sums)
            self.first_bad, self.skipped = self.bad - 1, torch.zeros((), dtype=dt, device=loss.device)
        else: self.sums, self.counts = self.sums + sums, self.counts + counts


def make_trainer(ds, args) -> Trainer:
    flow = ds.flow
    torch.manual_seed(0)
    model = flow.torch(in_features={'features': args.features}).to(args.device)
    return Trainer(model, flow.get_loss(), torch.optim.SGD(model.parameters(), lr=0.01),
                   ds.loader(args.batch_size, shuffle=True), epochs=1, device=args.device, progress=False, train_metrics=False)


def one_epoch(t: Trainer, loss_cls, epoch: int) -> float:
    "Seconds for one training epoch with `loss_cls` as the epoch accumulator."
    original = train.EpochLoss
    train.EpochLoss = loss_cls  # train_epoch builds its accumulator from the module's name
    try:
        if t.device.type == 'cuda': torch.cuda.synchronize()
        start = time.perf_counter()
        t.train_epoch(epoch)
        if t.device.type == 'cuda': torch.cuda.synchronize()
        return time.perf_counter() - start
    finally: train.EpochLoss = original


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--n', type=int, default=4096)
    ap.add_argument('--features', type=int, default=64)
    ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(args.n, seed=0)
    ds = FlowDataset(flow, {'features': torch.randn(args.n, args.features, generator=torch.Generator().manual_seed(0))},
                     data.labels)
    runs = {SumsAndCounts: make_trainer(ds, args), train.EpochLoss: make_trainer(ds, args)}
    times = {cls: [] for cls in runs}
    for e in range(args.epochs + 1):  # alternate, so both see the same machine load; the first round warms up
        for cls, t in runs.items(): times[cls].append(one_epoch(t, cls, e))
    baseline, tracked = min(times[SumsAndCounts][1:]), min(times[train.EpochLoss][1:])
    steps = -(-args.n // args.batch_size)
    print(f"{args.device}, {steps} steps of batch {args.batch_size}, 14 tasks: "
          f"baseline {baseline * 1e3:.1f} ms/epoch, with non-finite tracking {tracked * 1e3:.1f} ms/epoch, "
          f"ratio {tracked / baseline:.3f} ({(tracked - baseline) / steps * 1e6:+.1f} us/step)")


if __name__ == '__main__':
    main()
