"""The script tests/test_distributed.py runs twice: alone (`python tests/distributed_worker.py --out DIR`) and under
`torchrun --standalone --nproc_per_node=2` (gloo, CPU). Every process writes what it computed to DIR/rank<r>.pt;
the test compares the two runs.

A small conditional flow whose labels are spread very unevenly: task `b` (behind `a`) is labelled on 15 of the 16
samples the first process gets in the gradient check and on 1 of the second's, so a masked mean normalised per process
would weigh the second process's single label as much as the first's fifteen.

The checks that a process must not wait forever on (a loss on one process alone, best/worst over shards where one
process holds no batch or no label of a task) run under a `deadline`: a hang prints where it waits and fails the run
within a minute instead of at the test's timeout."""
import argparse
import contextlib
import faulthandler
import os
import warnings

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, Callback, ClassificationTask, FlowDataset,
                      LocalCountsWarning, Project, Trainer, UncertaintyWeighting, best_worst_inputs, collect_predictions,
                      evaluate, seed_everything)
from dnn_cool.distributed import barrier, init_distributed, is_distributed, rank, shard_loader, world_size


@contextlib.contextmanager
def deadline(seconds: float = 60):
    "Code that must return: past `seconds` this process prints every thread's stack and exits (torchrun ends the rest)."
    faulthandler.dump_traceback_later(seconds, exit=True)
    try: yield
    finally: faulthandler.cancel_dump_traceback_later()


def make_flow():
    p = Project([BinaryClassificationTask('a'), BinaryClassificationTask('b'), BoundedRegressionTask('r', 0, 10),
                 ClassificationTask('k', num_classes=3)])

    @p.add_flow
    def uneven(flow, x, out):
        out += flow.a(x.f)
        out += flow.b(x.f) | out.a
        out += flow.r(x.f) | out.a
        out += flow.k(x.f)
        return out
    return uneven


def make_data(flow, n, seed, unlabelled_odd=()):
    "`n` samples; the tasks in `unlabelled_odd` have no label on odd indices (a second process's `ShardSampler` shard)."
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 6)).astype(np.float32)
    labels = pd.DataFrame({'a': pd.array(np.ones(n, bool), dtype='boolean'), 'b': pd.array(x[:, 0] > 0, dtype='boolean'),
                           'r': 5 + 2 * np.tanh(x[:, 1]), 'k': pd.array(x[:, 2:5].argmax(1), dtype='Int64')})
    b_missing = np.ones(n, bool)
    b_missing[np.arange(n) % 32 < 15] = False  # first half of every 32: 15 labels of 16
    b_missing[np.arange(n) % 32 == 16] = False  # second half: 1 label of 16
    labels.loc[b_missing, 'b'] = None
    labels.loc[g.random(n) < 0.2, 'r'] = None
    labels.loc[np.arange(n) % 2 == 1, list(unlabelled_odd)] = None
    return FlowDataset(flow, {'f': torch.from_numpy(x)}, labels)


def grads_of(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def gradient_check(flow, ds):
    "Gradients of one step on samples 0..31: all at once alone, or 16 per process under DDP (local and global counts)."
    out = {}
    for name, kwargs in (('global', {'global_counts': True}), ('local', {})):  # the default: this process's counts
        torch.manual_seed(0)
        model = flow.torch(in_features={'f': 6})
        criterion = flow.get_loss(**kwargs)
        if is_distributed():
            x, y = ds[list(range(16 * rank(), 16 * rank() + 16))]
            ddp = DistributedDataParallel(model)  # kept alive through backward: its hooks average the gradients
            criterion(ddp(x), y).backward()
        else:
            x, y = ds[list(range(32))]
            criterion(model(x), y).backward()
        out[name] = grads_of(model)
    return out


class FirstStep(Callback):
    "The model's gradients after the first training step (the optimizer leaves them until the next step's zero_grad)."
    def on_batch_end(self, trainer, step, outputs, targets, bd):
        if step == 1: self.grads = grads_of(trainer.model)


def trained(flow, train, valid, per_process_batch, weighting=False, epochs=2, **loss_kwargs):
    "Epochs through the Trainer, with the script unchanged between one process and several."
    seed_everything(0)
    model = flow.torch(in_features={'f': 6})
    criterion = flow.get_loss(weighting=UncertaintyWeighting(flow) if weighting else None, **loss_kwargs)
    optimizer = torch.optim.Adam([*model.parameters(), *criterion.parameters()], lr=0.05)
    if is_distributed():  # the Trainer shards these loaders itself
        train_loader, valid_loader = train.loader(per_process_batch, shuffle=True), valid.loader(16)
    else:  # the reference: one process reading the same permutation in batches of world size x per-process batch
        train_loader = shard_loader(train.loader(2 * per_process_batch, shuffle=True), rank=0, world_size=1)
        valid_loader = valid.loader(16)
    first = FirstStep()
    trainer = Trainer(model, criterion, optimizer, train_loader, valid_loader, epochs=epochs, progress=False,
                      callbacks=[first])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', LocalCountsWarning)
        history = trainer.fit()
    return {'records': history.records, 'state': {k: v.detach().clone() for k, v in model.state_dict().items()},
            'loss_state': {k: v.detach().clone() for k, v in criterion.state_dict().items()},
            'first_grads': first.grads, 'global_counts_after': criterion.global_counts,
            'warnings': [str(w.message) for w in caught if issubclass(w.category, LocalCountsWarning)]}


def evaluation_check(flow, valid):
    "A fixed model evaluated over a loader split between the processes, or alone: tables, tuning, best and worst."
    torch.manual_seed(1)
    model = flow.torch(in_features={'f': 6})
    loader = valid.loader(8)
    if is_distributed(): loader = shard_loader(loader, train=False)
    predictions = collect_predictions(model, loader)
    results = flow.get_decoder().tune(predictions, apply=False, tasks=['a', 'b'])
    bw = best_worst_inputs(model, loader, n=3)
    return {'evaluate': evaluate(model, loader).to_dict('list'),
            'evaluate_predictions': evaluate(predictions).to_dict('list'),
            'index': predictions.index, 'thresholds': {p: r.threshold for p, r in results.items()},
            'best_worst': bw.to_frame().to_dict('list')}


def one_process_loss(flow, ds):
    "A loss and its gradients computed by rank 0 alone, the others waiting: with its default counts it must return."
    torch.manual_seed(0)
    model, criterion = flow.torch(in_features={'f': 6}), flow.get_loss()
    out = None
    if rank() == 0:
        with deadline():
            x, y = ds[list(range(16))]  # b: 15 labels
            loss = criterion(model(x), y)
            loss.backward()
            out = {'loss': loss.detach(), 'grads': grads_of(model), 'counts': criterion.last.count_vector}
    barrier()  # the others wait here; a loss that all-reduced would have waited for them (gloo pairs collectives by order)
    return out


def ranked(result):
    "What best_worst_inputs found, as plain data: per task the ranked indices, losses and counts, and their inputs."
    rows = result.to_frame().to_dict('list')
    indices = sorted({i for bw in result.values() for i in (*bw.best_indices, *bw.worst_indices)})
    inputs = result.dataset[indices][0]['f'] if indices else None
    return {'rows': rows, 'num_samples': {p: bw.num_samples for p, bw in result.items()}, 'indices': indices,
            'inputs': inputs, 'predicted_index': None if result.predictions is None else result.predictions.index}


def uneven_best_worst(flow):
    "Best and worst over shards where the second process has no batch at all, or no label of tasks b and r."
    torch.manual_seed(2)
    model = flow.torch(in_features={'f': 6})
    out = {}
    for name, ds, batch in (('empty_shard', make_data(flow, 1, seed=2), 4),  # 1 sample: rank 1's shard is empty
                            ('no_label', make_data(flow, 20, seed=3, unlabelled_odd=('b', 'r')), 4)):  # rank 1: odd indices
        loader = ds.loader(batch)
        if is_distributed(): loader = shard_loader(loader, train=False)
        with deadline():
            out[name] = {'loader_batches': len(loader), 'ranked': ranked(best_worst_inputs(model, loader, n=3))}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    init_distributed('cpu')
    flow = make_flow()
    train, valid = make_data(flow, 64, seed=0), make_data(flow, 42, seed=1)  # 42 valid: shards of 21, batches 8, 8, 5
    result = {'world_size': world_size(), 'rank': rank(), 'grads': gradient_check(flow, train),
              'trained': trained(flow, train, valid, per_process_batch=8),
              'weighted': trained(flow, train, valid, per_process_batch=8, weighting=True),
              'evaluation': evaluation_check(flow, valid),
              'explicit': {gc: trained(flow, train, valid, per_process_batch=8, epochs=1, global_counts=gc)
                           for gc in (True, False)},
              'one_process_loss': one_process_loss(flow, train),
              'uneven_best_worst': uneven_best_worst(flow)}
    os.makedirs(args.out, exist_ok=True)
    torch.save(result, os.path.join(args.out, f'rank{rank()}.pt'))
    if is_distributed(): torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
