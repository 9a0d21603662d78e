"""One epoch of the walkthrough's model under `lightning.Trainer` with `FlowLightningModule`, against the same epoch
under dnn_cool's own `Trainer` and against a bare Lightning module with one fused head, in one run.

All train the walkthrough's `SyntheticBackbone` on the synthetic scenes, batch 64, AdamW, over the same batches (one
`FlowDataset` loader each, same shuffling seed), then run the validation set once:

- **FlowLightningModule**: `lightning.Trainer(max_epochs=1).fit(FlowLightningModule(FlowNet(backbone, flow.torch())))`
  with its defaults: masked per-task losses by true counts, per-task metrics on the training and validation batches,
  every record key logged through `self.log`; and the same with `train_metrics=False`.
- **dnn_cool Trainer**: `Trainer(FlowNet(...), flow.get_loss(), ...)` with its defaults (as `bench_trainer.py`).
- **bare Lightning module** (the baseline): a `LightningModule` with the same backbone and one fused
  `nn.Linear(256, 22)` head for all 14 tasks, the walkthrough's masked loss written out by hand
  (`bench_train_step.hand_loss`), logging its loss per step and its validation loss per epoch, as a minimal
  Lightning module does.

The three Lightning runs build a fresh `lightning.Trainer` per epoch with the same settings (no progress bar, logger,
checkpointing or sanity check), so their fixed costs are alike. Times are medians over rounds that alternate between
the variants, each round one full epoch (train + validation); throughput is samples (train + valid) per second. Both
wall-clock and CPU time (`time.process_time`) are printed: on a machine shared with other jobs the wall-clock ratio
swings with their load, the CPU-time ratio much less (on a GPU, read the wall clock).

usage: python benchmarks/bench_lightning.py [--train 2048] [--valid 512] [--rounds 3] [--threads 1] [--device cpu]
"""
import argparse
import logging
import time
import warnings

import lightning as L
import torch


import dnn_cool  # noqa: F401
from dnn_cool.core import seed_everything
from dnn_cool.data import FlowDataset
from dnn_cool.demo import SyntheticBackbone
from dnn_cool.lightning import FlowLightningModule
from dnn_cool.net import FlowNet
from dnn_cool.synthetic import make_synthetic, synthetic_project
from dnn_cool.train import Trainer

from timing import interleaved
from bench_train_step import hand_loss
from bench_trainer import BareNet, short_keys


class BareLightning(L.LightningModule):
    "The baseline: one fused head and a hand-written masked loss, as a minimal LightningModule."
    def __init__(self, net: BareNet):
        super().__init__()
        self.net = net
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = hand_loss(self.net(x['image']), short_keys(y))
        self.log('train_loss', loss, prog_bar=True, batch_size=len(x['image']))
        return loss
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log('valid_loss', hand_loss(self.net(x['image']), short_keys(y)), batch_size=len(x['image']))
    def configure_optimizers(self): return torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=1e-4)


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
    logging.getLogger('lightning.pytorch').setLevel(logging.ERROR)
    warnings.filterwarnings('ignore')
    device = torch.device(args.device)
    data = make_synthetic(args.train + args.valid, seed=0)
    flow = synthetic_project().flows['full_flow']
    split = {'train': slice(0, args.train), 'valid': slice(args.train, args.train + args.valid)}
    ds = {k: FlowDataset(flow, {'image': data.images[s]}, data.labels.iloc[s].reset_index(drop=True)) for k, s in split.items()}
    loaders = lambda: (ds['train'].loader(args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)),
                       ds['valid'].loader(256))

    seed_everything(0)
    nets = {k: FlowNet(SyntheticBackbone(), flow.torch(in_features={'features': 256})) for k in ('flow', 'flow_no_train_metrics', 'trainer')}
    for net in nets.values(): net.load_state_dict(nets['flow'].state_dict())
    bare = BareLightning(BareNet(SyntheticBackbone()))
    bare.net.backbone.load_state_dict(nets['flow'].backbone.state_dict())
    adamw = lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    modules = {'flow': FlowLightningModule(nets['flow'], optimizer=adamw),
               'flow_no_train_metrics': FlowLightningModule(nets['flow_no_train_metrics'], optimizer=adamw, train_metrics=False),
               'bare': bare}
    train_loader, valid_loader = loaders()
    trainer = Trainer(nets['trainer'], flow.get_loss(), adamw(nets['trainer'].parameters()), train_loader, valid_loader,
                      epochs=1, device=device, progress=False)
    accelerator = 'gpu' if device.type == 'cuda' else 'cpu'

    def lightning_epoch(module):
        def run():
            fit = L.Trainer(max_epochs=1, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
            fit.fit(module, *loaders())
        return run

    def sync():
        if device.type == 'cuda': torch.cuda.synchronize()

    variants = {'bare': lightning_epoch(modules['bare']), 'flow': lightning_epoch(modules['flow']),
                'flow_no_train_metrics': lightning_epoch(modules['flow_no_train_metrics']), 'trainer': trainer.fit}
    for f in variants.values(): f()  # warm-up: first-call costs (allocations, kernels, imports) out of the timing
    t, c = interleaved(variants, args.rounds, sync)
    n = args.train + args.valid
    print(f'walkthrough flow (14 tasks), SyntheticBackbone(width=32), batch {args.batch_size}, {args.train} train + '
          f'{args.valid} valid samples per epoch, device={device}, {args.threads} thread(s), lightning {L.__version__}, '
          f'median of {args.rounds} epochs after one warm-up epoch each')
    names = {'bare': 'bare Lightning module (fused head)', 'flow': 'FlowLightningModule',
             'flow_no_train_metrics': 'FlowLightningModule, no train metrics', 'trainer': 'dnn_cool Trainer'}
    for k, name in names.items():
        print(f"{name:40s}: {t[k]:8.3f} s/epoch wall ({n / t[k]:7.1f} samples/s), {c[k]:8.3f} s CPU ({n / c[k]:7.1f} samples/CPU-s)")
    for k in ('flow', 'flow_no_train_metrics', 'trainer'):
        print(f"ratio ({names[k]} / bare Lightning module): {t[k] / t['bare']:.3f}x wall, {c[k] / c['bare']:.3f}x CPU")
    print(f"ratio (FlowLightningModule / dnn_cool Trainer): {t['flow'] / t['trainer']:.3f}x wall, {c['flow'] / c['trainer']:.3f}x CPU")


if __name__ == '__main__':
    main()
