"""One training step of the walkthrough flow: dnn_cool's FlowModule + FlowLoss against a hand-fused baseline.

The baseline is what an expert would write by hand for this one flow: all 14 heads fused into a single nn.Linear, the
precondition masks spelled out, every loss written with torch.where masking. Both compute the same loss (checked
before timing), so the ratio is dnn_cool's overhead for building the same thing from a flow description.

usage: python benchmarks/bench_train_step.py [--batch-size 256] [--features 256] [--steps 200] [--device cpu]
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import dnn_cool  # noqa: F401
from dnn_cool.core import to_device
from dnn_cool.data import FlowDataset
from dnn_cool.synthetic import BOX_COLUMNS, make_synthetic, synthetic_project

FACE, BODY = 'person_regression.face_regression', 'person_regression.body_regression'
BOXES = [f'{FACE}.{c}' for c in BOX_COLUMNS[:4]] + [f'{BODY}.{c}' for c in BOX_COLUMNS[4:]]


class HandFused(nn.Module):
    "All heads in one Linear: 4 binary, 8 boxes, 3 facial characteristics, 7 shirt types = 22 outputs."
    def __init__(self, features):
        super().__init__()
        self.linear = nn.Linear(features, 22)

    def forward(self, x):
        return self.linear(x)  # (bs, 22)


def hand_loss(logits, y):
    "The walkthrough's masked loss written out by hand for this flow (same rules as FlowLoss)."
    cb, do, dl, pp = (y[k] for k in ('camera_blocked', 'door_open', 'door_locked', 'person_present'))
    known = lambda t: ~torch.isnan(t)  # noqa: E731
    # preconditions from the ground truth: `out.b` = b applies, b's label known, and b true
    applies_do = known(cb) & (cb == 0)
    applies_dl = applies_do & known(do) & (do == 0)
    applies_pp = applies_do & known(do) & (do == 1)
    applies_person = applies_pp & known(pp) & (pp == 1)

    def masked_mean(per_sample, mask):
        return torch.where(mask, per_sample, 0).sum() / mask.sum().clamp_min(1)

    total = 0
    for j, (t, applies) in enumerate([(cb, torch.ones_like(applies_do)), (do, applies_do), (dl, applies_dl), (pp, applies_pp)]):
        bce = F.binary_cross_entropy_with_logits(logits[:, j], t.nan_to_num(), reduction='none')
        total = total + masked_mean(bce, applies & known(t))
    for j, p in enumerate(BOXES):
        t = y[p]
        mse = (torch.sigmoid(logits[:, 4 + j]) - t.nan_to_num() / 64) ** 2
        total = total + masked_mean(mse, applies_person & known(t))
    fc = y[f'{FACE}.facial_characteristics']  # (bs, 3) NaN per missing label
    present = known(fc)
    bce = F.binary_cross_entropy_with_logits(logits[:, 12:15], fc.nan_to_num(), reduction='none')
    per_sample = torch.where(present, bce, 0).sum(1) / present.sum(1).clamp_min(1)
    total = total + masked_mean(per_sample, applies_person & present.any(1))
    shirt = y[f'{BODY}.shirt_type']
    ce = F.cross_entropy(logits[:, 15:22], shirt.clamp_min(0), reduction='none')
    return total + masked_mean(ce, applies_person & (shirt >= 0))


def copy_heads(fused, module):
    "Give the fused Linear exactly the weights of dnn_cool's heads, so both compute the same numbers."
    order = ['camera_blocked', 'door_open', 'door_locked', 'person_present', *BOXES,
             f'{FACE}.facial_characteristics', f'{BODY}.shirt_type']
    with torch.no_grad():
        fused.linear.weight.copy_(torch.cat([module.head(p).weight for p in order]))
        fused.linear.bias.copy_(torch.cat([module.head(p).bias for p in order]))


def time_steps(step, steps, device):
    for _ in range(10): step()  # warm-up
    if device.type == 'cuda': torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps): step()
    if device.type == 'cuda': torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch-size', type=int, default=256)
    ap.add_argument('--features', type=int, default=256)
    ap.add_argument('--steps', type=int, default=200)
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(args.batch_size, seed=0)
    ds = FlowDataset(flow, {'features': torch.randn(args.batch_size, args.features)}, data.labels)
    x, y = to_device(ds[list(range(args.batch_size))], device)
    y_short = {k.split('.')[-1] if k in ('camera_blocked', 'door_open', 'door_locked', 'person_present') else k: v
               for k, v in y.items()}

    model = flow.torch(in_features={'features': args.features}).to(device).train()
    criterion = flow.get_loss()
    fused = HandFused(args.features).to(device)
    copy_heads(fused, model)
    torch.testing.assert_close(hand_loss(fused(x['features']), y_short), criterion(model(x), y))  # same computation

    opt_a = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt_b = torch.optim.SGD(fused.parameters(), lr=1e-3)

    def step_dnn_cool():
        opt_a.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        opt_a.step()

    def step_hand():
        opt_b.zero_grad(set_to_none=True)
        hand_loss(fused(x['features']), y_short).backward()
        opt_b.step()

    t_hand = time_steps(step_hand, args.steps, device)
    t_ours = time_steps(step_dnn_cool, args.steps, device)
    print(f'device={device} batch={args.batch_size} features={args.features} tasks={len(flow.graph.nodes)} steps={args.steps}')
    print(f'hand-fused baseline : {t_hand * 1e3:8.3f} ms/step')
    print(f'dnn_cool flow module: {t_ours * 1e3:8.3f} ms/step')
    print(f'ratio (dnn_cool / baseline): {t_ours / t_hand:.2f}x')


if __name__ == '__main__':
    main()
