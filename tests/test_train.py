"""Heavier checks of `dnn_cool.train`: multi-epoch runs compared with brute-force references (one large batch,
the whole epoch as one batch, two seeded runs), clipping, bfloat16 autocast, freezing and the progress bar."""
import copy
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

import dnn_cool.losses  # noqa: F401  (flow.get_loss)
import dnn_cool.module  # noqa: F401  (flow.torch)
from dnn_cool.data import FlowDataset
from dnn_cool.core import seed_everything
from dnn_cool.flow import Project, decoder_thresholds
from dnn_cool.tasks import (BinaryClassificationTask, BoundedRegressionTask, MultilabelClassificationTask,
                            RegressionTask)
from dnn_cool.tasks import task_threshold
from dnn_cool.checkpoint import read_checkpoint, replace_atomically, update_checkpoint_thresholds
from dnn_cool.train import (Callback, Checkpoint, EarlyStopping, EpochLoss, FlowNet, ProgressBars, Trainer,
                            load_checkpoint)
from walkthrough import toy_data, toy_flow


FLOW = toy_flow()
TRAIN, VALID = toy_data(FLOW, 512, seed=0), toy_data(FLOW, 256, seed=1)


def make_trainer(epochs=3, lr=0.05, batch_size=64, opt=torch.optim.Adam, model=None, **kwargs):
    if model is None:
        seed_everything(0)
        model = FLOW.torch(in_features={'features': 8})
    kwargs.setdefault('progress', False)
    return Trainer(model, FLOW.get_loss(), opt(model.parameters(), lr=lr), TRAIN.loader(batch_size, shuffle=True),
                   VALID.loader(100), flow=FLOW, epochs=epochs, **kwargs)


def whole(ds):
    return ds[list(range(len(ds)))]


def test_learns_and_metrics_improve():
    h = make_trainer(epochs=8).fit()
    assert h['valid_loss'][-1] < 0.5 * h['valid_loss'][0]
    assert h['train_loss'][-1] < h['train_loss'][0]
    for p, m in [('is_positive', 'accuracy'), ('is_positive', 'f1_score'), ('kind', 'accuracy_1')]:
        assert h[f'valid/{p}/{m}'][-1] > h[f'valid/{p}/{m}'][0], (p, m)
    assert h['valid/is_positive/accuracy'][-1] > 0.93
    assert h['valid/size/mean_absolute_error'][-1] < h['valid/size/mean_absolute_error'][0]


def test_epoch_losses_are_true_count_averages():
    "With lr=0 the weights never move, so the training epoch's losses are those of the whole set as one batch."
    seed_everything(0)
    model = FLOW.torch(in_features={'features': 8})
    crit = FLOW.get_loss(weights={'size': 3.0})
    t = Trainer(model, crit, torch.optim.SGD(model.parameters(), lr=0.0), TRAIN.loader(96, shuffle=True),
                VALID.loader(70), flow=FLOW, epochs=1, progress=False)
    rec = t.fit().records[0]
    for ds, prefix in [(TRAIN, 'train'), (VALID, 'valid')]:
        x, y = whole(ds)
        model.train(prefix == 'train')
        with torch.no_grad(): ref = crit.breakdown(model(x), y)
        for p in FLOW.graph.paths:  # brute force: sum over every counted sample / their count
            mask = ref.mask[p]
            brute = ref.per_sample[p][mask].sum().item() / mask.sum().item()
            assert rec[f'{prefix}/{p}/loss'] == pytest.approx(brute, rel=1e-6)
        assert rec[f'{prefix}_loss'] == pytest.approx(ref.total.item(), rel=1e-6)
    # any batching gives the same epoch losses; the mean of batch means does not: put each task's 10 worst
    # samples in a first batch and the rest in a second
    x, y = whole(VALID)
    model.eval()
    with torch.no_grad(): ref = crit.breakdown(model(x), y)
    for p in FLOW.graph.paths:
        order = torch.argsort(ref.per_sample[p], descending=True).tolist()
        loader = [VALID[order[:10]], VALID[order[10:]]]
        rec = t.validate(loader)
        brute = ref.per_sample[p].sum().item() / ref.mask[p].sum().item()
        assert rec[f'valid/{p}/loss'] == pytest.approx(brute, rel=1e-6)
        with torch.no_grad(): batch_means = [crit.breakdown(model(bx), by).per_task[p].item() for bx, by in loader]
        assert np.mean(batch_means) > 1.2 * brute, p


def test_epoch_loss_handles_a_task_with_no_sample():
    crit = FLOW.get_loss()
    x, y = VALID[list(range(8))]
    y = {**y, 'size': torch.full_like(y['size'], float('nan'))}
    model = FLOW.torch(in_features={'features': 8})
    acc = EpochLoss()
    with torch.no_grad():
        bd = crit.breakdown(model(x), y)
    acc.update(bd, bd.total, 8)
    total, losses, counts = acc.compute(crit.weights)
    assert np.isnan(losses['size']) and counts['size'] == 0
    assert total == pytest.approx(losses['is_positive'] + losses['kind'], rel=1e-6)


def regression_flow():
    project = Project([RegressionTask('a'), BoundedRegressionTask('b', -3, 3)])

    @project.add_flow
    def reg(flow, x, out):
        out += flow.a(x.features)
        out += flow.b(x.features)
        return out
    return reg


@pytest.mark.parametrize('k,b,n', [(3, 4, 12), (3, 4, 24), (2, 5, 30)])
def test_grad_accumulation_equals_one_large_batch(k, b, n):
    "k batches of b with accumulation == one batch of k*b (plain SGD, every label present so counts are equal)."
    flow = regression_flow()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 5, generator=g)
    labels = pd.DataFrame({'a': (x[:, 0] * 2 + 1).numpy().astype(np.float64), 'b': x[:, 1].tanh().numpy() * 2.5})
    ds = FlowDataset(flow, {'features': x}, labels)
    torch.manual_seed(0)
    base = flow.torch(in_features={'features': 5})
    runs = {}
    for name, batch, steps in [('accum', b, k), ('large', k * b, 1)]:
        model = copy.deepcopy(base)
        t = Trainer(model, flow.get_loss(), torch.optim.SGD(model.parameters(), lr=0.1), ds.loader(batch),
                    flow=flow, epochs=2, grad_accum_steps=steps, progress=False, train_metrics=False)
        t.fit()
        runs[name] = model.state_dict()
    for key, v in runs['large'].items():
        torch.testing.assert_close(runs['accum'][key], v, rtol=1e-5, atol=1e-6)
    assert not torch.equal(runs['large']['heads.a.weight'], base.state_dict()['heads.a.weight'])


class NoLen:
    "A loader without `__len__` (like a DataLoader over an IterableDataset): batches come from a generator."
    def __init__(self, batches): self.batches = batches
    def __iter__(self): yield from self.batches


@pytest.mark.parametrize('n,k', [(10, 4), (10, 3), (8, 4)])
@pytest.mark.parametrize('loader_type', ['len', 'no_len'])
def test_grad_accumulation_short_last_group(n, k, loader_type):
    """n single-sample batches with k=4: groups of k and a last short one of m = n % k (10, 4: 4, 4 and 2); the last
    group's gradient is the mean over its m batches, with or without a loader length: the reference trains on the same
    groups, each as one batch."""
    flow = regression_flow()
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(2))
    labels = pd.DataFrame({'a': x[:, 0].numpy().astype(np.float64), 'b': x[:, 1].tanh().numpy()})
    ds = FlowDataset(flow, {'features': x}, labels)
    torch.manual_seed(0)
    base = flow.torch(in_features={'features': 5})
    singles = [ds[[i]] for i in range(n)]
    groups = [ds[list(range(s, min(s + k, n)))] for s in range(0, n, k)]
    runs = {}
    for name, loader, steps in [('accum', singles if loader_type == 'len' else NoLen(singles), k), ('large', groups, 1)]:
        model = copy.deepcopy(base)
        t = Trainer(model, flow.get_loss(), torch.optim.SGD(model.parameters(), lr=0.1), loader, flow=flow,
                    epochs=1, grad_accum_steps=steps, progress=False, train_metrics=False)
        t.fit()
        assert t.optimizer_steps == len(groups)
        runs[name] = model.state_dict()
    assert not hasattr(NoLen(singles), '__len__')
    for key, v in runs['large'].items():
        torch.testing.assert_close(runs['accum'][key], v, rtol=1e-5, atol=1e-6)


def _scheduled_regression_run(n_batches, poisoned, scaler):
    """SGD at lr 0.1 with StepLR halving it every optimizer step, under `scaler`; the loss of the batches in `poisoned`
    is multiplied by inf so their gradients overflow. Returns the trainer and, per batch, whether the weights moved."""
    flow = regression_flow()
    x = torch.randn(2 * n_batches, 5, generator=torch.Generator().manual_seed(3))
    ds = FlowDataset(flow, {'features': x}, pd.DataFrame({'a': x[:, 0].double().numpy(), 'b': x[:, 1].tanh().numpy()}))
    torch.manual_seed(0)
    model = flow.torch(in_features={'features': 5})
    loss, calls = flow.get_loss(), iter(range(10 ** 6))

    def criterion(outputs, targets):
        value = loss(outputs, targets)
        return value * float('inf') if next(calls) in poisoned else value
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    moved = []

    class Moved(Callback):
        def on_fit_start(self, trainer): self.last = copy.deepcopy(trainer.model.state_dict())
        def on_batch_end(self, trainer, step, outputs, targets, bd):
            now = trainer.model.state_dict()
            moved.append(any(not torch.equal(now[key], v) for key, v in self.last.items()))
            self.last = copy.deepcopy(now)
    t = Trainer(model, criterion, opt, ds.loader(2), flow=flow, epochs=1, train_metrics=False, progress=False,
                scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), scheduler_interval='step',
                callbacks=[Moved()])
    t.scaler = scaler  # stands in for float16 on CUDA, where overflowing steps are skipped the same way
    t.fit()
    return t, moved


def test_per_step_scheduler_skips_the_steps_the_scaler_skips():
    poisoned = {1, 2, 5}
    t, moved = _scheduled_regression_run(8, poisoned, torch.amp.GradScaler('cpu', init_scale=1.0))
    assert moved == [i not in poisoned for i in range(8)]  # the scaler skipped exactly the overflowing steps
    assert t.optimizer_steps == 5
    assert t.optimizer.param_groups[0]['lr'] == pytest.approx(0.1 * 0.5 ** 5)  # one halving per real step


def test_per_step_scheduler_with_every_step_skipped():
    "An infinite scale overflows every step (and stays infinite): neither the weights nor the learning rate move."
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)  # "lr_scheduler.step() before optimizer.step()" would raise
        t, moved = _scheduled_regression_run(3, set(), torch.amp.GradScaler('cpu', init_scale=float('inf')))
    assert moved == [False] * 3 and t.optimizer_steps == 0
    assert t.optimizer.param_groups[0]['lr'] == 0.1


def test_reduce_on_plateau_per_step_is_refused():
    seed_everything(0)
    model = FLOW.torch(in_features={'features': 8})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="ReduceLROnPlateau.*scheduler_interval='epoch'"):
        Trainer(model, FLOW.get_loss(), opt, TRAIN.loader(64), flow=FLOW, epochs=1, progress=False,
                scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(opt), scheduler_interval='step')


class GradNorms(Callback):
    def on_fit_start(self, trainer): self.after, self.before = [], []
    def on_batch_end(self, trainer, step, outputs, targets, loss_breakdown):
        grads = [q.grad for q in trainer.model.parameters() if q.grad is not None]
        self.after.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(gr) for gr in grads])).item())
        self.before.append(trainer.last_grad_norm.item())


def test_clipping_bounds_the_grad_norm():
    norms = GradNorms()
    make_trainer(epochs=1, clip_grad_norm=0.05, callbacks=[norms]).fit()
    assert max(norms.after) <= 0.05 * (1 + 1e-5)
    assert min(norms.before) > 0.05  # clipping did act
    unclipped = GradNorms()
    make_trainer(epochs=1, callbacks=[unclipped], clip_grad_norm=1e9).fit()
    assert max(unclipped.after) > 0.05


def test_seeding_makes_runs_identical():
    class Dropout(nn.Module):  # randomness inside the model too
        def __init__(self): super().__init__(); self.drop = nn.Dropout(0.3)
        def forward(self, x): return self.drop(x)

    def run():
        seed_everything(123)
        net = FlowNet(Dropout(), FLOW.torch(in_features={'features': 8}), input_key='features', output_key='features')
        t = make_trainer(epochs=3, model=net, seed=7)
        h = t.fit()
        return h, {k: v.clone() for k, v in net.state_dict().items()}
    (h1, s1), (h2, s2) = run(), run()
    pd.testing.assert_frame_equal(h1.to_frame(), h2.to_frame())
    for k in s1: assert torch.equal(s1[k], s2[k]), k
    # and a different seed differs
    seed_everything(123)
    net = FlowNet(Dropout(), FLOW.torch(in_features={'features': 8}), input_key='features', output_key='features')
    h3 = make_trainer(epochs=3, model=net, seed=8).fit()
    assert h3['train_loss'] != h1['train_loss']


def test_bf16_autocast_on_cpu():
    logits_dtypes = []

    class Dtypes(Callback):
        def on_batch_end(self, trainer, step, outputs, targets, bd): logits_dtypes.append(outputs['logits']['kind'].dtype)
    h = make_trainer(epochs=4, amp_dtype=torch.bfloat16, callbacks=[Dtypes()]).fit()
    assert set(logits_dtypes) == {torch.bfloat16}
    assert all(np.isfinite(h['train_loss'])) and all(np.isfinite(h['valid_loss']))
    assert h['valid_loss'][-1] < h['valid_loss'][0]
    assert h['valid/is_positive/accuracy'][-1] > 0.8


def test_fp16_without_cuda_has_no_scaler():
    t = make_trainer(epochs=1, amp_dtype=torch.float16)
    assert not t.scaler.is_enabled()
    with pytest.raises(ValueError, match='amp_dtype'):
        make_trainer(amp_dtype=torch.float32)


def test_freezing_keeps_frozen_params():
    seed_everything(0)
    backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    net = FlowNet(backbone, FLOW.torch(in_features={'features': 16}), input_key='features')
    net.freeze(backbone=True, tasks=['size'])
    before = copy.deepcopy(net.state_dict())
    opt = torch.optim.AdamW(net.param_groups(0.05), weight_decay=0.1)
    Trainer(net, FLOW.get_loss(), opt, TRAIN.loader(64), flow=FLOW, epochs=2, progress=False).fit()
    for k, v in net.state_dict().items():
        frozen = k.startswith('backbone') or 'heads.size' in k
        assert torch.equal(v, before[k]) == frozen, k
    net.unfreeze(backbone=True, tasks=['size'])
    Trainer(net, FLOW.get_loss(), opt, TRAIN.loader(64), flow=FLOW, epochs=1, progress=False).fit()
    assert not torch.equal(net.state_dict()['backbone.0.weight'], before['backbone.0.weight'])


def test_param_groups_set_each_lr():
    seed_everything(0)
    net = FlowNet(nn.Linear(8, 16), FLOW.torch(in_features={'features': 16}), input_key='features')
    opt = torch.optim.SGD(net.param_groups(1.0, backbone_lr=0.1, task_lr={'kind': 0.01}), lr=123.0)
    lrs = {name: g['lr'] for g in opt.param_groups for name in [g['name']]}
    assert lrs == {'backbone': 0.1, 'heads': 1.0, 'kind': 0.01}
    by_param = {id(q): g['lr'] for g in opt.param_groups for q in g['params']}
    for name, q in net.named_parameters():
        want = 0.1 if name.startswith('backbone') else 0.01 if 'heads.kind' in name else 1.0
        assert by_param[id(q)] == want, name


def test_early_stopping_on_valid_loss_and_checkpoint(tmp_path):
    class Scripted(Callback):
        def on_epoch_end(self, trainer, epoch, record): record['valid_loss'] = [4, 3, 3, 2, 2.5, 2.1, 9, 9][epoch]
    snaps = []

    class Snap(Callback):
        def on_epoch_end(self, trainer, epoch, record): snaps.append(copy.deepcopy(trainer.model.state_dict()))
    path = tmp_path / 'best.pt'
    t = make_trainer(epochs=8, callbacks=[Scripted(), Snap(), EarlyStopping(3), Checkpoint(path)])
    h = t.fit()
    assert (len(h), h.best_epoch, h.stopped_early) == (7, 3, True)
    fresh = FLOW.torch(in_features={'features': 8})
    ckpt = load_checkpoint(fresh, path)
    assert ckpt['epoch'] == 3
    for k, v in fresh.state_dict().items(): assert torch.equal(v, snaps[3][k]), k
    # restore_best=False leaves the last epoch's weights in the model
    for k, v in t.model.state_dict().items(): assert torch.equal(v, snaps[-1][k]), k


def test_reduce_on_plateau_gets_the_monitor():
    seed_everything(0)
    model = FLOW.torch(in_features={'features': 8})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode='max', patience=0, factor=0.5)

    class Scripted(Callback):
        def on_epoch_end(self, trainer, epoch, record): record['score'] = [1, 1, 1, 2][epoch]
    t = Trainer(model, FLOW.get_loss(), opt, TRAIN.loader(256), flow=FLOW, epochs=4, scheduler=sched,
                monitor='score', callbacks=[Scripted()], progress=False)
    h = t.fit()
    assert h['lr/0'] == [0.1, 0.1, 0.05, 0.025]


def test_progress_bar_and_summary_lines(capsys):
    make_trainer(epochs=2, progress='bars').fit()
    err = capsys.readouterr()
    text = err.out + err.err
    assert 'epoch 0: train_loss=' in text and 'epoch 1: train_loss=' in text and 'valid_loss=' in text


def test_criterion_without_breakdown():
    seed_everything(0)
    model = FLOW.torch(in_features={'features': 8})
    loss = FLOW.get_loss()
    t = Trainer(model, lambda out, y: loss(out, y), torch.optim.SGD(model.parameters(), lr=0.1), TRAIN.loader(64),
                VALID.loader(64), flow=FLOW, epochs=2, progress=False)
    h = t.fit()
    assert 'valid/kind/loss' not in h.records[0] and np.isfinite(h['valid_loss']).all()
    assert 'valid/kind/accuracy_1' in h.records[0]


def test_keyboard_interrupt_keeps_history_and_restores_best():
    class Interrupt(Callback):
        def on_batch_end(self, trainer, step, outputs, targets, bd):
            if trainer.epoch == 2: raise KeyboardInterrupt
    ended = []

    class End(Callback):
        def on_fit_end(self, trainer): ended.append(True)
    snaps = []

    class Snap(Callback):
        def on_epoch_end(self, trainer, epoch, record): snaps.append(copy.deepcopy(trainer.model.state_dict()))
    t = make_trainer(epochs=5, callbacks=[Interrupt(), End(), Snap(), Checkpoint(restore_best=True)])
    h = t.fit()
    assert len(h) == 2 and h.stopped_early and ended == [True]
    for k, v in t.model.state_dict().items(): assert torch.equal(v, snaps[h.best_epoch][k]), k


def threshold_flow():
    "A fresh project (its own task objects, every threshold at the default 0.5) with per-label and single thresholds."
    project = Project([BinaryClassificationTask('a'), MultilabelClassificationTask('m', num_labels=3),
                       MultilabelClassificationTask('q', num_labels=2), RegressionTask('r')])

    @project.add_flow
    def f(flow, x, out):
        for name in ('a', 'm', 'q', 'r'): out += getattr(flow, name)(x.features)
        return out
    return f


def threshold_data(flow, n=64):
    g = np.random.default_rng(4)
    x = g.normal(size=(n, 6)).astype(np.float32)
    labels = pd.DataFrame({'a': x[:, 0] > 0, 'm': list((x[:, 1:4] > 0).astype(int)), 'q': list((x[:, 4:6] > 0).astype(int)),
                           'r': x[:, 5].astype(np.float64)})
    return FlowDataset(flow, {'features': torch.from_numpy(x)}, labels)


def test_checkpoint_thresholds_load_back_into_a_fresh_flow(tmp_path):
    "A run decoding with non-default thresholds is checkpointed; a fresh flow and model get thresholds and weights back."
    flow = threshold_flow()
    tuned = {'a': 0.25, 'm': [0.1, 0.6, 0.8], 'q': [0.2, 0.9]}
    flow.graph['a'].task.decoder.threshold = 0.25
    flow.graph['m'].task.decoder.threshold = [0.1, 0.6, 0.8]
    flow.graph['q'].task.decoder.threshold = [0.2, 0.9]
    ds = threshold_data(flow)
    snaps = []

    class Snap(Callback):
        def on_epoch_end(self, trainer, epoch, record): snaps.append(copy.deepcopy(trainer.model.state_dict()))

    class Scripted(Callback):  # the best epoch is 1, not the last
        def on_epoch_end(self, trainer, epoch, record): record['valid_loss'] = [3.0, 1.0, 2.0][epoch]
    seed_everything(0)
    model = flow.torch(in_features={'features': 6})
    path = tmp_path / 'best.pt'
    Trainer(model, flow.get_loss(), torch.optim.Adam(model.parameters(), lr=0.05), ds.loader(16), ds.loader(64),
            epochs=3, callbacks=[Snap(), Scripted(), Checkpoint(path)], progress=False).fit()
    assert read_checkpoint(path)['thresholds'] == tuned  # inside the checkpoint, once
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pt']

    fresh_flow = threshold_flow()
    fresh = fresh_flow.torch(in_features={'features': 6})
    assert [task_threshold(fresh_flow.graph[p].task) for p in 'amq'] == [0.5, [0.5] * 3, [0.5] * 2]
    ckpt = load_checkpoint(fresh, path)  # thresholds into fresh.flow, i.e. fresh_flow
    assert ckpt['epoch'] == 1
    for k, v in fresh.state_dict().items(): assert torch.equal(v, snaps[1][k]), k
    assert [task_threshold(fresh_flow.graph[p].task) for p in 'amq'] == [0.25, [0.1, 0.6, 0.8], [0.2, 0.9]]
    # and the fresh model decodes with them: activated >= threshold, computed by hand
    x, _ = ds[list(range(len(ds)))]
    fresh.eval()
    with torch.no_grad(): out = fresh({'features': x['features']})
    assert torch.equal(out['decoded']['a'], torch.sigmoid(out['logits']['a']) >= 0.25)
    assert torch.equal(out['decoded']['m'], torch.sigmoid(out['logits']['m']) >= torch.tensor([0.1, 0.6, 0.8]))
    assert torch.equal(out['decoded']['q'], torch.sigmoid(out['logits']['q']) >= torch.tensor([0.2, 0.9]))
    # an explicit flow gets the thresholds instead of the model's own; the file is the decoder's format too
    other, model_flow = threshold_flow(), threshold_flow()
    load_checkpoint(model_flow.torch(in_features={'features': 6}), path, flow=other)
    assert decoder_thresholds(other) == tuned and decoder_thresholds(model_flow) == {'a': 0.5, 'm': [0.5] * 3, 'q': [0.5] * 2}
    # thresholds tuned after the fit go into the checkpoint, and load from there
    update_checkpoint_thresholds(path, {'a': 0.7})
    fresh_flow = threshold_flow()
    load_checkpoint(fresh_flow.torch(in_features={'features': 6}), path)
    assert decoder_thresholds(fresh_flow) == {**tuned, 'a': 0.7}


def test_checkpoint_thresholds_that_do_not_fit_are_refused(tmp_path):
    flow = threshold_flow()
    ds = threshold_data(flow)
    seed_everything(0)
    model = flow.torch(in_features={'features': 6})
    path = tmp_path / 'best.pt'
    Trainer(model, flow.get_loss(), torch.optim.SGD(model.parameters(), lr=0.05), ds.loader(32), epochs=1,
            callbacks=[Checkpoint(path)], progress=False).fit()
    fresh_flow = threshold_flow()
    fresh = fresh_flow.torch(in_features={'features': 6})
    before = copy.deepcopy(fresh.state_dict())
    raw = torch.load(path, weights_only=True)
    def write_thresholds(values):  # a file whose thresholds don't fit its flow (update_checkpoint_thresholds refuses to write one)
        meta = json.loads(raw['meta'])
        replace_atomically(path, lambda tmp: torch.save({**raw, 'meta': json.dumps({**meta, 'thresholds': values})}, tmp))
    for bad, message in [({'m': [0.1, 0.2]}, "task 'm' has 3 labels"), ({'r': 0.5}, "task 'r' has no tunable"),
                         ({'zz': 0.5}, "no task 'zz'"), ({'a': [0.1, 0.2]}, "task 'a' takes one finite float"),
                         ({'a': 1.5}, r"task 'a': thresholds are compared with activations in \[0, 1\]")]:
        write_thresholds({'a': 0.3, **bad})
        with pytest.raises((KeyError, ValueError), match=message): load_checkpoint(fresh, path)
        assert task_threshold(fresh_flow.graph['a'].task) == 0.5  # checked before anything is set
        for k, v in fresh.state_dict().items(): assert torch.equal(v, before[k]), k


def test_restore_best_in_memory_restores_thresholds():
    "Without a path, restore_best puts back the best epoch's weights and thresholds."
    flow = threshold_flow()
    ds = threshold_data(flow)

    class Scripted(Callback):
        def on_epoch_end(self, trainer, epoch, record):
            record['valid_loss'] = [3.0, 1.0, 2.0][epoch]
            trainer.flow.graph['a'].task.decoder.threshold = [0.3, 0.4, 0.6][epoch]  # e.g. tuned every epoch
    seed_everything(0)
    model = flow.torch(in_features={'features': 6})
    t = Trainer(model, flow.get_loss(), torch.optim.SGD(model.parameters(), lr=0.05), ds.loader(32), ds.loader(64),
                epochs=3, callbacks=[Scripted(), Checkpoint(restore_best=True)], progress=False)
    t.fit()
    assert (t.restored_epoch, task_threshold(flow.graph['a'].task)) == (1, 0.4)


class PoisonSize(Callback):
    "Turns a weight of task `size`'s head into NaN after step `at`, as a diverging head would."
    def __init__(self, at): self.at = at
    def on_batch_end(self, trainer, step, outputs, targets, bd):
        if step == self.at:
            with torch.no_grad(): trainer.model.head('size').weight[0, 0] = float('nan')


def test_nonfinite_loss_raises_at_the_next_log_point():
    "With progress bars updating every batch, the error comes at the first bad step, not at the end of the epoch."
    from dnn_cool.train import NonFiniteLossError
    t = make_trainer(epochs=2, batch_size=64, callbacks=[PoisonSize(3), ProgressBars(log_every=1)])
    with pytest.raises(NonFiniteLossError, match=r"task 'size' is not finite \(NaN or inf\), first at step 4 \(batch 4"):
        t.fit()
    assert t.global_step == 4  # of 8 batches in the epoch


def test_nonfinite_losses_under_a_grad_scaler_are_skipped_steps_not_divergence():
    "A float16 GradScaler skips steps whose loss overflows: they are counted, left out of the epoch loss, not an error."
    t, _ = _scheduled_regression_run(8, {1, 2, 5}, torch.amp.GradScaler('cpu', init_scale=1.0))
    rec = t.history.records[0]
    assert rec['train/skipped_batches'] == 3 and np.isfinite(rec['train_loss'])
