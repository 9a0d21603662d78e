"""The script tests/test_lightning.py runs twice: `python tests/lightning_worker.py --out DIR --devices 1` (one process)
and `--devices 2`, where `lightning.Trainer(strategy='ddp', devices=2)` starts the second process itself (gloo, CPU),
running this same script. Every process writes what it computed to DIR/rank<r>.pt; the test compares the two runs.

The flow and data are tests/distributed_worker.py's: task `b` (behind `a`) is labelled on 15 of the first 16 samples
and on 1 of the next 16, so in the one training step (32 samples; 16 per process under DDP) a loss normalised by each
process's own counts would weigh the second process's single label as much as the first's fifteen. The validation
data (41 samples) is read twice: in the batches of a FlowDataset loader (3 batches: Lightning repeats a whole batch
to give both processes two) and by a plain DataLoader of samples (Lightning repeats one sample).

Each fit runs under a deadline: a hang prints where every thread waits and fails the run instead of the test's timeout.
"""
import argparse
import faulthandler
import logging
import os
import sys
import warnings

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distributed_worker import make_data, make_flow  # noqa: E402

import lightning as L  # noqa: E402

from dnn_cool import LocalCountsWarning  # noqa: E402
from dnn_cool.lightning import FlowLightningModule, kept_rows  # noqa: E402


class CountingRepeats(FlowLightningModule):
    "Counts, per validation loader, the rows Lightning's sampler repeated (which the metrics leave out)."
    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        loaders = self.trainer.val_dataloaders
        rows = len(batch[1]['a'])
        self.repeats[dataloader_idx] = self.repeats.get(dataloader_idx, 0) + rows - kept_rows(loaders[dataloader_idx], batch_idx, rows)
        return super().validation_step(batch, batch_idx, dataloader_idx)


def fit(flow, train, valid, devices, **loss_kwargs):
    "One SGD step on the 32 training samples (16 per process under DDP), then the validation epoch."
    L.seed_everything(0, verbose=False)
    model = flow.torch(in_features={'f': 6})
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    module = CountingRepeats(model, criterion=flow.get_loss(**loss_kwargs), optimizer=lambda params: torch.optim.SGD(params, lr=0.5))
    module.repeats = {}
    trainer = L.Trainer(accelerator='cpu', devices=devices, strategy='ddp' if devices > 1 else 'auto', max_epochs=1,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    per_sample = DataLoader(valid, batch_size=16)  # items one by one, collated: Lightning shards them sample by sample
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', LocalCountsWarning)
        trainer.fit(module, train.loader(32 // devices), [valid.loader(16), per_sample])
    return {'rank': trainer.global_rank, 'world_size': trainer.world_size, 'initial': initial,
            'state': {k: v.detach().clone() for k, v in model.state_dict().items()},
            'record': module.history.records[-1], 'repeats': module.repeats, 'global_counts_after': module.criterion.global_counts,
            'warnings': [str(w.message) for w in caught if issubclass(w.category, LocalCountsWarning)], 'flow': flow,
            'sync_dist_advice': [str(w.message) for w in caught if 'sync_dist=True' in str(w.message)]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    ap.add_argument('--devices', type=int, default=1)
    args = ap.parse_args()
    faulthandler.dump_traceback_later(240, exit=True)  # the deadline of every process
    torch.set_num_threads(1)
    logging.getLogger('lightning.pytorch').setLevel(logging.ERROR)
    warnings.filterwarnings('ignore', '.*does not have many workers.*')
    flow = make_flow()
    train, valid = make_data(flow, 32, seed=0), make_data(flow, 41, seed=1)
    result = {'global': fit(flow, train, valid, args.devices)}
    tuned = None
    if result['global']['rank'] == 0:  # rank 0 alone: tune() reads the whole validation set, without the other process
        tuned = flow.get_decoder().tune(apply=False, min_per_class=0)
        tuned = {p: r.threshold for p, r in tuned.items()}
    result['tuned'] = tuned
    local = fit(make_flow(), train, valid, args.devices, global_counts=False)
    result['local'] = local
    for r in result.values():
        if isinstance(r, dict): r.pop('flow', None)
    os.makedirs(args.out, exist_ok=True)
    torch.save(result, os.path.join(args.out, f"rank{result['global']['rank']}.pt"))
    faulthandler.cancel_dump_traceback_later()


if __name__ == '__main__':
    main()
