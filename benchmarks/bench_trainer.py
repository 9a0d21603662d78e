"""The walkthrough's epoch through `Trainer` against the same network trained by a bare loop.

Both train the walkthrough's `SyntheticBackbone` on the synthetic scenes, batch 64, AdamW, over the same batches
(one `FlowDataset` loader each, same shuffling seed), then run the validation set once:

- **Trainer**: `Trainer(FlowNet(backbone, flow.torch()), flow.get_loss(), ...)` with its defaults: masked per-task
  losses by true counts, per-task metrics on the training and the validation batches, the epoch record.
- **bare loop** (the baseline): the same backbone with one fused `nn.Linear(256, 22)` head for all 14 tasks and
  the walkthrough's masked loss written out by hand (`bench_train_step.hand_loss`), `loss.backward()`,
  `optimizer.step()`; validation computes the loss only.

Times are medians over rounds that alternate between the two, each round one full epoch (train + validation);
throughput is samples (train + valid) per second. Both wall-clock and CPU time (`time.process_time`) are printed:
on a machine shared with other jobs the wall-clock ratio swings with their load, the CPU-time ratio much less.

usage: python benchmarks/bench_trainer.py [--train 2048] [--valid 512] [--rounds 3] [--threads 1]
"""
import argparse
import time

import torch


import dnn_cool  # noqa: F401
from dnn_cool.core import seed_everything
from dnn_cool.data import FlowDataset
from dnn_cool.demo import SyntheticBackbone
from dnn_cool.synthetic import make_synthetic, synthetic_project
from dnn_cool.train import FlowNet, Trainer

from timing import interleaved
from bench_train_step import HandFused, hand_loss

BINARY = ('camera_blocked', 'door_open', 'door_locked', 'person_present')


class BareNet(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.head = backbone, HandFused(backbone.out_features)
    def forward(self, image): return self.head(self.backbone(image))  # (bs, 22)


def short_keys(y):
    return {k.split('.')[-1] if k in BINARY else k: v for k, v in y.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--train', type=int, default=2048)
    ap.add_argument('--valid', type=int, default=512)
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = make_synthetic(args.train + args.valid, seed=0)
    flow = synthetic_project().flows['full_flow']
    split = {'train': slice(0, args.train), 'valid': slice(args.train, args.train + args.valid)}
    ds = {k: FlowDataset(flow, {'image': data.images[s]}, data.labels.iloc[s].reset_index(drop=True)) for k, s in split.items()}

    seed_everything(0)
    net = FlowNet(SyntheticBackbone(), flow.torch(in_features={'features': 256}))
    bare = BareNet(SyntheticBackbone())
    bare.backbone.load_state_dict(net.backbone.state_dict())
    opt_net, opt_bare = (torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4) for m in (net, bare))
    loaders = lambda: (ds['train'].loader(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)),
                       ds['valid'].loader(256))
    train_loader, valid_loader = loaders()
    trainer = Trainer(net, flow.get_loss(), opt_net, train_loader, valid_loader, epochs=1, device=device, progress=False)
    bare.to(device)

    def epoch_trainer():
        trainer.fit()

    def epoch_bare():
        train, valid = loaders()
        bare.train()
        for x, y in train:
            image, y = x['image'].to(device, non_blocking=True), short_keys({k: v.to(device, non_blocking=True) for k, v in y.items()})
            loss = hand_loss(bare(image), y)
            opt_bare.zero_grad(set_to_none=True)
            loss.backward()
            opt_bare.step()
        bare.eval()
        total = torch.zeros((), device=device)
        with torch.no_grad():
            for x, y in valid:
                total += hand_loss(bare(x['image'].to(device)), short_keys({k: v.to(device) for k, v in y.items()}))
        total.item()

    def sync():
        if device.type == 'cuda': torch.cuda.synchronize()

    variants = {'bare': epoch_bare, 'trainer': epoch_trainer}
    t, c = interleaved(variants, args.rounds, sync)
    n = args.train + args.valid
    print(f'walkthrough flow (14 tasks), SyntheticBackbone(width=32), batch {args.batch_size}, {args.train} train + '
          f'{args.valid} valid samples per epoch, device={device}, {args.threads} thread(s), median of {args.rounds} epochs')
    for k, name in (('bare', 'bare loop (one fused head, hand loss)'), ('trainer', 'dnn_cool Trainer')):
        print(f"{name:38s}: {t[k]:8.3f} s/epoch wall ({n / t[k]:7.1f} samples/s), {c[k]:8.3f} s CPU ({n / c[k]:7.1f} samples/CPU-s)")
    print(f"ratio (Trainer / bare loop): {t['trainer'] / t['bare']:.3f}x wall, {c['trainer'] / c['bare']:.3f}x CPU")


if __name__ == '__main__':
    main()
