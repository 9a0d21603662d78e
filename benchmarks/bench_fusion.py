"""Many sibling heads: dnn_cool's FlowModule + FlowLoss against a hand-fused baseline and a per-task loop.

The issue's setting: `n` binary tasks on an MLP backbone (in -> 512 -> 512), 30% of the labels missing, every odd task
`| out.t0`, one thread. One training step is forward, loss, backward and an SGD step.

- **hand-fused** (the baseline): what an expert writes for this one flow: one `nn.Linear(512, n)` head and one
  masked BCE over `(bs, n)`, the precondition spelled out, targets already stacked as a `(bs, n)` tensor.
- **dnn_cool**: `FlowNet(backbone, flow.torch())` and `flow.get_loss()` on a batch a `FlowDataset` yields: targets
  as a `{path: (bs,)}` dict (the columns of one `(bs, n)` block per fused group, as the data set keeps them).
- **per-task loop**: one `nn.Linear(512, 1)` and one masked BCE per task, summed in a Python loop.
- **per-task parameters**: the hand-fused loss over per-task `nn.Linear(512, 1)` heads whose weights are
  concatenated on the fly: what a fused forward costs when each task keeps parameters of its own (as dnn_cool's
  heads did before they were stored together; `flow.torch(fuse=False)` and a split storage still pay part of it):
  autograd's accumulation, `zero_grad` and the optimizer run once per task. dnn_cool now stores a fused group's
  heads as one weight and one bias (`dnn_cool.module.FusedHeads`), so it can beat this column.

All compute the same loss on the same weights (checked before timing). Times are medians over rounds that
alternate between the variants, so a noisy neighbour slows all of them alike; `--clock cpu` times CPU use
(`time.process_time`) instead of the wall clock, steadier on a machine shared with other jobs.

usage: python benchmarks/bench_fusion.py [--configs 32x512,32x4096,64x256] [--steps 30] [--rounds 7]
"""
import argparse
import statistics
import time

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

import dnn_cool  # noqa: F401  (flow.torch, flow.get_loss)
from dnn_cool import BinaryClassificationTask, FlowDataset, FlowNet, Project
from dnn_cool.core import to_device


def make_flow(n_tasks):
    project = Project([BinaryClassificationTask(f't{i}') for i in range(n_tasks)])
    def body(flow, x, out):
        for i in range(n_tasks):
            node = getattr(flow, f't{i}')(x.features)
            out += node | out.t0 if i % 2 else node
        return out
    return project.add_flow(body, name='many')


def make_batch(flow, n_tasks, bs, in_features, seed=0):
    "One batch as a `FlowDataset` yields it (`(x, y)`: inputs and `gt`; targets per task), and the `(bs, n)` labels."
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bs, in_features, generator=g)
    labels = (torch.rand(bs, n_tasks, generator=g) < 0.4).float()
    labels = torch.where(torch.rand(bs, n_tasks, generator=g) < 0.3, float('nan'), labels)  # 30% missing
    frame = pd.DataFrame(labels.numpy(), columns=[f't{i}' for i in range(n_tasks)]).astype('boolean')
    batch, y = FlowDataset(flow, {'image': x}, frame)[list(range(bs))]
    return batch, y, labels


def backbone(in_features, width=512):
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())


class HandFused(nn.Module):
    def __init__(self, in_features, n_tasks, width=512):
        super().__init__()
        self.backbone, self.head = backbone(in_features, width), nn.Linear(width, n_tasks)
    def forward(self, x): return self.head(self.backbone(x))  # (bs, n)


def hand_loss(logits, labels):
    "Masked BCE over (bs, n): odd tasks count only where t0 is labelled and true."
    known = ~torch.isnan(labels)  # (bs, n)
    t0_true = known[:, 0] & (labels[:, 0] > 0.5)  # (bs,)
    odd = torch.arange(labels.shape[1], device=labels.device) % 2 == 1  # (n,)
    mask = known & (t0_true[:, None] | ~odd)  # (bs, n)
    bce = F.binary_cross_entropy_with_logits(logits, labels.nan_to_num(), reduction='none')
    per_task = torch.where(mask, bce, 0).sum(0) / mask.sum(0).clamp_min(1)  # (n,)
    return per_task.sum()


class PerTaskParameters(nn.Module):
    "One nn.Linear per task, concatenated into one product on the fly: the price of per-task parameters."
    def __init__(self, in_features, n_tasks, width=512):
        super().__init__()
        self.backbone = backbone(in_features, width)
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(n_tasks))
    def forward(self, x):
        weight, bias = torch.cat([h.weight for h in self.heads]), torch.cat([h.bias for h in self.heads])
        return F.linear(self.backbone(x), weight, bias)  # (bs, n)


class PerTask(nn.Module):
    def __init__(self, in_features, n_tasks, width=512):
        super().__init__()
        self.backbone = backbone(in_features, width)
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(n_tasks))
    def forward(self, x):
        h = self.backbone(x)
        return [head(h).squeeze(-1) for head in self.heads]  # n x (bs,)


def per_task_loss(logits, y):
    t0 = y['t0']
    t0_true = ~torch.isnan(t0) & (t0 > 0.5)
    total = 0
    for i, lo in enumerate(logits):
        t = y[f't{i}']
        mask = ~torch.isnan(t) & (t0_true if i % 2 else True)
        bce = F.binary_cross_entropy_with_logits(lo, t.nan_to_num(), reduction='none')
        total = total + torch.where(mask, bce, 0).sum() / mask.sum().clamp_min(1)
    return total


def copy_weights(ours, hand, loop, pertask, n_tasks):
    "Give the four models the same weights."
    with torch.no_grad():
        for m in (hand, loop, pertask): m.backbone.load_state_dict(ours.backbone.state_dict())
        for i, h in enumerate(pertask.heads): h.load_state_dict(ours.flow_module.head(f't{i}').state_dict())
        hand.head.weight.copy_(torch.cat([ours.flow_module.head(f't{i}').weight for i in range(n_tasks)]))
        hand.head.bias.copy_(torch.cat([ours.flow_module.head(f't{i}').bias for i in range(n_tasks)]))
        for i, h in enumerate(loop.heads): h.load_state_dict(ours.flow_module.head(f't{i}').state_dict())


def run(n_tasks, bs, in_features, steps, rounds, foreach=None, clock=time.perf_counter, device='cpu'):
    device = torch.device(device)
    torch.manual_seed(0)
    flow = make_flow(n_tasks)
    ours = FlowNet(backbone(in_features), flow.torch(in_features={'features': 512}), input_key='image').train()
    criterion = flow.get_loss()
    hand, loop = HandFused(in_features, n_tasks).train(), PerTask(in_features, n_tasks).train()
    pertask = PerTaskParameters(in_features, n_tasks).train()
    copy_weights(ours, hand, loop, pertask, n_tasks)
    for m in (ours, hand, loop, pertask): m.to(device)
    x, y, labels = to_device(make_batch(flow, n_tasks, bs, in_features), device)
    ref = hand_loss(hand(x['image']), labels)
    torch.testing.assert_close(criterion(ours(x), y), ref)  # the same computation
    torch.testing.assert_close(per_task_loss(loop(x['image']), y), ref)
    torch.testing.assert_close(hand_loss(pertask(x['image']), labels), ref)

    models = (('hand', hand), ('ours', ours), ('loop', loop), ('pertask', pertask))
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, foreach=foreach) for k, m in models}
    def step_hand():
        opts['hand'].zero_grad(set_to_none=True)
        hand_loss(hand(x['image']), labels).backward()
        opts['hand'].step()
    def step_ours():
        opts['ours'].zero_grad(set_to_none=True)
        criterion(ours(x), y).backward()
        opts['ours'].step()
    def step_loop():
        opts['loop'].zero_grad(set_to_none=True)
        per_task_loss(loop(x['image']), y).backward()
        opts['loop'].step()
    def step_floor():
        opts['pertask'].zero_grad(set_to_none=True)
        hand_loss(pertask(x['image']), labels).backward()
        opts['pertask'].step()
    variants = {'hand': step_hand, 'pertask': step_floor, 'ours': step_ours, 'loop': step_loop}
    for f in variants.values():
        for _ in range(3): f()  # warm-up
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for k, f in variants.items():
            sync()
            start = clock()
            for _ in range(steps): f()
            sync()
            times[k].append((clock() - start) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--configs', default='32x512,32x4096,64x256', help='comma-separated n_tasks x batch_size')
    ap.add_argument('--in-features', type=int, default=256)
    ap.add_argument('--steps', type=int, default=30, help='steps per timed round')
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--foreach', action='store_true', help="SGD(foreach=True) for every variant (CUDA's default)")
    ap.add_argument('--clock', choices=['wall', 'cpu'], default='wall')
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, device={args.device}, {args.threads} thread(s), MLP {args.in_features}->512->512, SGD '
          f'{"foreach" if args.foreach else "default"}, median of {args.rounds} rounds x {args.steps} steps; '
          f'{args.clock} times in ms')
    print(f"{'tasks':>5} {'batch':>6} {'hand':>9} {'per-task':>9} {'dnn_cool':>9} {'loop':>9} "
          f"{'dnn_cool/hand':>14} {'per-task/hand':>14} {'loop/hand':>10}")
    for cfg in args.configs.split(','):
        n_tasks, bs = map(int, cfg.split('x'))
        t = run(n_tasks, bs, args.in_features, args.steps, args.rounds, foreach=True if args.foreach else None,
                clock=time.process_time if args.clock == 'cpu' else time.perf_counter, device=args.device)
        print(f"{n_tasks:>5} {bs:>6} {t['hand'] * 1e3:>9.3f} {t['pertask'] * 1e3:>9.3f} {t['ours'] * 1e3:>9.3f} "
              f"{t['loop'] * 1e3:>9.3f} {t['ours'] / t['hand']:>13.3f}x {t['pertask'] / t['hand']:>13.3f}x "
              f"{t['loop'] / t['hand']:>9.3f}x", flush=True)


if __name__ == '__main__':
    main()
