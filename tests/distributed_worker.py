"""The script tests/test_distributed.py runs twice: alone (`python tests/distributed_worker.py --out DIR`) and under
`torchrun --standalone --nproc_per_node=2` (gloo, CPU). Every process writes what it computed to DIR/rank<r>.pt;
the test compares the two runs.

A small conditional flow whose labels are spread very unevenly: task `b` (behind `a`) is labelled on 15 of the 16
samples the first process gets in the gradient check and on 1 of the second's, so a masked mean normalised per process
would weigh the second process's single label as much as the first's fifteen."""
import argparse
import os

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask, FlowDataset, Project,
                      Trainer, UncertaintyWeighting, best_worst_inputs, collect_predictions, evaluate, seed_everything)
from dnn_cool.distributed import init_distributed, is_distributed, rank, shard_loader, world_size


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


def make_data(flow, n, seed):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 6)).astype(np.float32)
    labels = pd.DataFrame({'a': pd.array(np.ones(n, bool), dtype='boolean'), 'b': pd.array(x[:, 0] > 0, dtype='boolean'),
                           'r': 5 + 2 * np.tanh(x[:, 1]), 'k': pd.array(x[:, 2:5].argmax(1), dtype='Int64')})
    b_missing = np.ones(n, bool)
    b_missing[np.arange(n) % 32 < 15] = False  # first half of every 32: 15 labels of 16
    b_missing[np.arange(n) % 32 == 16] = False  # second half: 1 label of 16
    labels.loc[b_missing, 'b'] = None
    labels.loc[g.random(n) < 0.2, 'r'] = None
    return FlowDataset(flow, {'f': torch.from_numpy(x)}, labels)


def grads_of(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def gradient_check(flow, ds):
    "Gradients of one step on samples 0..31: all at once alone, or 16 per process under DDP (local and global counts)."
    out = {}
    for name, kwargs in (('global', {}), ('local', {'global_counts': False})):
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


def trained(flow, train, valid, per_process_batch, weighting=False):
    "Two epochs through the Trainer, with the script unchanged between one process and several."
    seed_everything(0)
    model = flow.torch(in_features={'f': 6})
    criterion = flow.get_loss(weighting=UncertaintyWeighting(flow) if weighting else None)
    optimizer = torch.optim.Adam([*model.parameters(), *criterion.parameters()], lr=0.05)
    if is_distributed():  # the Trainer shards these loaders itself
        train_loader, valid_loader = train.loader(per_process_batch, shuffle=True), valid.loader(16)
    else:  # the reference: one process reading the same permutation in batches of world size x per-process batch
        train_loader = shard_loader(train.loader(2 * per_process_batch, shuffle=True), rank=0, world_size=1)
        valid_loader = valid.loader(16)
    trainer = Trainer(model, criterion, optimizer, train_loader, valid_loader, epochs=2, progress=False)
    history = trainer.fit()
    return {'records': history.records, 'state': {k: v.detach().clone() for k, v in model.state_dict().items()},
            'loss_state': {k: v.detach().clone() for k, v in criterion.state_dict().items()}}


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    init_distributed('cpu')
    flow = make_flow()
    train, valid = make_data(flow, 64, seed=0), make_data(flow, 42, seed=1)  # 42 valid: shards of 21, batches 8, 8, 5
    result = {'world_size': world_size(), 'grads': gradient_check(flow, train),
              'trained': trained(flow, train, valid, per_process_batch=8),
              'weighted': trained(flow, train, valid, per_process_batch=8, weighting=True),
              'evaluation': evaluation_check(flow, valid)}
    os.makedirs(args.out, exist_ok=True)
    torch.save(result, os.path.join(args.out, f'rank{rank()}.pt'))
    if is_distributed(): torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
