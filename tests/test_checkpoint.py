"""Checkpoints that carry the whole model: round trips that predict identically (from the file alone too), a resumed
run that reproduces the uninterrupted one bit for bit, atomic writes, and errors that name the file."""
import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

import dnn_cool.losses  # noqa: F401  (flow.get_loss)
import dnn_cool.module  # noqa: F401  (flow.torch)
import dnn_cool.checkpoint as checkpoint_module
from dnn_cool.checkpoint import (CheckpointError, load_checkpoint, load_flow, read_checkpoint, save_checkpoint,
                                 structure_diff, flow_structure, update_checkpoint_thresholds)
from dnn_cool.core import seed_everything
from dnn_cool.evaluation import collect_predictions, predict
from dnn_cool.flow import Project, decoder_thresholds, set_decoder_thresholds
from dnn_cool.module import FlowModule
from dnn_cool.tasks import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask,
                            MaskedLanguageModelingTask, MultilabelClassificationTask, RegressionTask)
from dnn_cool.train import Callback, Checkpoint, FlowNet, Trainer
from walkthrough import toy_data, toy_flow


def every_type_flow(num_classes=3):
    "A fresh flow with a task of every predefined type, nested, behind `~`, `&` and `|` preconditions."
    p = Project([BinaryClassificationTask('a', pos_weight=2.0), BinaryClassificationTask('b', threshold=0.3),
                 ClassificationTask('k', labels=['x', 'y', 'z'][:num_classes] if num_classes <= 3 else None,
                                    num_classes=num_classes, top_k=2),
                 MultilabelClassificationTask('m', labels=['p', 'q'], threshold=[0.4, 0.6]),
                 BoundedRegressionTask('box', 0, 64), RegressionTask('r', loc=1.0, scale=2.0),
                 MaskedLanguageModelingTask('tokens', vocab_size=5, top_k=3)])

    @p.add_flow
    def inner(flow, x, out):
        out += flow.b(x.features)
        out += flow.k(x.features) | out.b
        out += flow.box(x.features) | ~out.b
        return out

    @p.add_flow
    def full(flow, x, out):
        out += flow.a(x.features)
        out += flow.inner(x.features) | out.a
        out += flow.m(x.features) | (out.a | ~out.a)
        out += flow.r(x.features)
        out += flow.tokens(x.sequence)
        return out
    return full


def every_type_batch(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'features': torch.randn(n, 6, generator=g), 'sequence': torch.randn(n, 4, 6, generator=g)}


def test_round_trip_gives_identical_predictions(tmp_path):
    "Saved and loaded into a fresh flow's module, or rebuilt from the file alone: the same outputs and predictions."
    torch.manual_seed(0)
    flow = every_type_flow()
    model = flow.torch(every_type_batch(2)).eval()
    set_decoder_thresholds(flow, {'a': 0.45, 'inner.b': 0.35, 'm': [0.2, 0.8]})
    batch = every_type_batch()
    path = save_checkpoint(tmp_path / 'model.pt', model)

    fresh_flow = every_type_flow()
    fresh = fresh_flow.torch(every_type_batch(2)).eval()
    load_checkpoint(fresh, path)
    rebuilt = FlowModule.from_checkpoint(path)
    assert rebuilt.training is False
    with torch.no_grad(): ref, a, b = model(batch), fresh(batch), rebuilt(batch)
    for key in ('logits', 'activated', 'decoded', 'predicted_precondition'):
        for p in flow.graph.paths:
            assert torch.equal(a[key][p], ref[key][p]), (key, p)
            assert torch.equal(b[key][p], ref[key][p]), (key, p)
    pd.testing.assert_frame_equal(predict(rebuilt, batch), predict(model, batch))
    assert decoder_thresholds(rebuilt.flow) == decoder_thresholds(flow) == decoder_thresholds(fresh_flow)
    assert rebuilt.flow.summary() == flow.summary()
    assert structure_diff(flow_structure(flow), rebuilt.flow) == []
    # the rebuilt tasks carry every keyword: classes, ranges, top_k, loss weights
    t = {n.path: n.task for n in rebuilt.flow.graph.nodes}
    assert (t['inner.k'].labels, t['inner.k'].top_k, t['a'].pos_weight) == (['x', 'y', 'z'], 2, 2.0)
    assert (t['inner.box'].low, t['inner.box'].high, t['r'].loc, t['r'].scale, t['tokens'].top_k) == (0, 64, 1, 2, 3)


def test_the_file_loads_with_weights_only_and_json(tmp_path):
    torch.manual_seed(0)
    flow = every_type_flow()
    path = save_checkpoint(tmp_path / 'model.pt', flow.torch(every_type_batch(2)), info={'epoch': 2, 'score': float('nan')})
    raw = torch.load(path, weights_only=True)  # never an arbitrary pickle
    assert sorted(raw) == ['format', 'meta', 'state_dict', 'version']
    meta = json.loads(raw['meta'])  # strict JSON: NaN is stored as null
    assert (meta['epoch'], meta['score'], meta['format']) == (2, None, 'dnn_cool.checkpoint')
    assert [n['name'] for n in meta['flow']['nodes']] == ['a', 'inner', 'm', 'r', 'tokens']
    assert meta['thresholds'] == decoder_thresholds(flow)  # stored once, in the checkpoint


def test_a_flownet_checkpoint_loads_into_a_flownet_and_rebuilds_the_heads(tmp_path):
    torch.manual_seed(0)
    flow = every_type_flow()
    net = FlowNet(nn.Linear(6, 6), flow.torch(every_type_batch(2)), input_key='features').eval()
    path = save_checkpoint(tmp_path / 'net.pt', net)
    fresh = FlowNet(nn.Linear(6, 6), every_type_flow().torch(every_type_batch(2)), input_key='features').eval()
    load_checkpoint(fresh, path)
    for k, v in net.state_dict().items(): assert torch.equal(fresh.state_dict()[k], v), k
    with pytest.warns(UserWarning, match="also holds 2 weights outside the flow module"):
        heads = FlowModule.from_checkpoint(path)
    assert torch.equal(heads.head('a').weight, net.flow_module.head('a').weight)


# --- resuming


class Interrupt(Callback):
    "Ctrl-C in the middle of epoch `at` (after epoch at-1 was checkpointed)."
    def __init__(self, at): self.at = at
    def on_batch_end(self, trainer, step, outputs, targets, bd):
        if trainer.epoch == self.at and step - trainer._epoch_first_step == 1: raise KeyboardInterrupt


FLOW = toy_flow()
TRAIN, VALID = toy_data(FLOW, 256, 0, missing=0), toy_data(FLOW, 128, 1, missing=0)


def resumable_trainer(loader_generator: bool, scheduler: str, **kwargs):
    "A fresh model (dropout in the backbone), optimizer and scheduler; shuffling by the global RNG or a generator."
    torch.manual_seed(123)  # a different init each time it matters: the checkpoint must overwrite it
    net = FlowNet(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3)), FLOW.torch(in_features={'features': 16}),
                  input_key='features')
    opt = torch.optim.Adam(net.param_groups(0.02, task_lr={'size': 0.01}))
    sched = (torch.optim.lr_scheduler.StepLR(opt, 3, gamma=0.5) if scheduler == 'step'
             else torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5))
    gen = torch.Generator().manual_seed(5) if loader_generator else None
    kwargs.setdefault('epochs', 4)
    return Trainer(net, FLOW.get_loss(), opt, TRAIN.loader(32, shuffle=True, generator=gen), VALID.loader(64),
                   scheduler=sched, clip_grad_norm=1.0, seed=0, progress=False, **kwargs)


def same_records(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra: assert ra[k] == rb[k] or (math.isnan(ra[k]) and math.isnan(rb[k])), (ra['epoch'], k, ra[k], rb[k])


@pytest.mark.parametrize('loader_generator,scheduler', [(False, 'step'), (True, 'plateau')])
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, loader_generator, scheduler):
    "Interrupted in epoch 2 (so the last checkpoint is epoch 1) and resumed in a fresh trainer: the same run, bit for bit."
    whole_trainer = resumable_trainer(loader_generator, scheduler)
    whole = whole_trainer.fit()
    last = tmp_path / 'last.pt'
    first = resumable_trainer(loader_generator, scheduler, callbacks=[Interrupt(2), Checkpoint(last_path=last)])
    first.fit()
    assert len(first.history) == 2 and read_checkpoint(last)['epoch'] == 1
    resumed_trainer = resumable_trainer(loader_generator, scheduler)
    resumed = resumed_trainer.fit(resume_from=last)
    same_records(whole.records, resumed.records)  # epochs 0-1 from the file, 2-3 trained again
    assert (resumed.best_epoch, resumed.best_score) == (whole.best_epoch, whole.best_score)
    for k, v in whole_trainer.model.state_dict().items(): assert torch.equal(resumed_trainer.model.state_dict()[k], v), k
    assert resumed_trainer.optimizer.param_groups[0]['lr'] == whole_trainer.optimizer.param_groups[0]['lr']
    assert (resumed_trainer.global_step, resumed_trainer.optimizer_steps) == (whole_trainer.global_step, whole_trainer.optimizer_steps)


def test_resume_is_refused_when_the_run_does_not_match(tmp_path):
    last = tmp_path / 'last.pt'
    resumable_trainer(False, 'step', epochs=1, callbacks=[Checkpoint(last_path=last)]).fit()
    t = resumable_trainer(False, 'step')
    t.optimizer = torch.optim.SGD(t.model.parameters(), lr=0.1)  # one group instead of three
    before, refused = copy.deepcopy(t.model.state_dict()), t
    with pytest.raises(CheckpointError, match=f"{last}: its optimizer state doesn't fit this optimizer"): t.fit(resume_from=last)
    t = resumable_trainer(False, 'step')
    t.scheduler = None
    with pytest.raises(CheckpointError, match=r"was saved by a run with a scheduler; this trainer has no scheduler"):
        t.fit(resume_from=last)
    weights_only = save_checkpoint(tmp_path / 'weights.pt', t.model)
    with pytest.raises(CheckpointError, match=f"{weights_only} holds weights but no training state to resume from"):
        resumable_trainer(False, 'step').fit(resume_from=weights_only)
    assert before.keys() == t.model.state_dict().keys()
    for k, v in refused.model.state_dict().items(): assert torch.equal(before[k], v), k  # the refused resume changed nothing


def test_the_best_checkpoint_holds_the_best_epoch_and_never_a_diverged_one(tmp_path):
    class Scripted(Callback):  # epoch 2 would be the best by its score, but its weights turn NaN
        def on_epoch_end(self, trainer, epoch, record): record['valid_loss'] = [3.0, 2.0, 1.0][epoch]

    class Poison(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 2:
                with torch.no_grad(): trainer.model.flow_module.head('size').bias.fill_(float('nan'))
    best, last = tmp_path / 'best.pt', tmp_path / 'last.pt'
    t = resumable_trainer(False, 'step', epochs=3, on_nonfinite='warn',
                          callbacks=[Scripted(), Poison(), Checkpoint(best, restore_best=True, last_path=last)])
    with pytest.warns(UserWarning, match="task 'size' is not finite"): h = t.fit()
    assert (h.best_epoch, t.restored_epoch, read_checkpoint(best)['epoch']) == (1, 1, 1)
    assert read_checkpoint(last)['epoch'] == 1  # the diverged epoch 2 did not replace the last good resume point
    assert all(torch.isfinite(v).all() for v in t.model.state_dict().values())


# --- atomic writes and broken files


def test_a_crash_mid_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    torch.manual_seed(0)
    flow = every_type_flow()
    model = flow.torch(every_type_batch(2))
    path = save_checkpoint(tmp_path / 'model.pt', model, info={'epoch': 1})
    old = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, 'r+b') as fh: fh.truncate(len(old) // 3)  # half written...
        raise OSError('No space left on device')  # ...and the process dies
    monkeypatch.setattr(checkpoint_module.torch, 'save', dying_save)
    with torch.no_grad(): model.head('a').weight.add_(1)
    with pytest.raises(OSError, match='No space left'): save_checkpoint(path, model, info={'epoch': 2})
    with pytest.raises(OSError, match='No space left'): save_checkpoint(tmp_path / 'new.pt', model)
    monkeypatch.undo()
    assert path.read_bytes() == old and read_checkpoint(path)['epoch'] == 1
    assert not (tmp_path / 'new.pt').exists()  # no truncated file under the final name
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.pt']  # no temporary left


@pytest.mark.parametrize('cut', [0, 10, 100, 0.5, 0.9])
def test_truncated_checkpoints_name_the_file(tmp_path, cut):
    torch.manual_seed(0)
    model = every_type_flow().torch(every_type_batch(2))
    data = save_checkpoint(tmp_path / 'model.pt', model).read_bytes()
    broken = tmp_path / 'broken.pt'
    broken.write_bytes(data[:int(cut * len(data)) if isinstance(cut, float) else cut])
    fresh = every_type_flow().torch(every_type_batch(2))
    before = copy.deepcopy(fresh.state_dict())
    with pytest.raises(CheckpointError, match=f"{broken} can't be read as a checkpoint: it is truncated or corrupt"):
        load_checkpoint(fresh, broken)
    for k, v in fresh.state_dict().items(): assert torch.equal(v, before[k])


def test_a_different_structure_is_refused_with_a_readable_diff(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / 'model.pt', every_type_flow().torch(every_type_batch(2)))
    other = every_type_flow(num_classes=4)
    target = other.torch(every_type_batch(2))
    before, thresholds = copy.deepcopy(target.state_dict()), decoder_thresholds(other)
    with pytest.raises(CheckpointError) as e: load_checkpoint(target, path)
    msg = str(e.value)
    assert f"{path} was saved from a flow of a different structure than 'full'" in msg
    assert "task 'inner.k': num_classes 3 in the checkpoint, 4 in this flow" in msg
    assert "task 'inner.k': labels ['x', 'y', 'z'] in the checkpoint, None in this flow" in msg
    for k, v in target.state_dict().items(): assert torch.equal(v, before[k])
    assert decoder_thresholds(other) == thresholds


def test_old_checkpoints_still_load(tmp_path):
    "A file of the earlier format (a plain dict with a state_dict, epoch and thresholds) loads, without structure."
    torch.manual_seed(0)
    flow = every_type_flow()
    model = flow.torch(every_type_batch(2))
    torch.save({'state_dict': model.state_dict(), 'epoch': 3, 'monitor': 'valid_loss', 'score': 0.5,
                'thresholds': {'a': 0.25}}, tmp_path / 'old.pt')
    fresh_flow = every_type_flow()
    ckpt = load_checkpoint(fresh_flow.torch(every_type_batch(2)), tmp_path / 'old.pt')
    assert (ckpt['epoch'], decoder_thresholds(fresh_flow)['a']) == (3, 0.25)
    with pytest.raises(CheckpointError, match="was written before checkpoints held the flow's structure"):
        load_flow(tmp_path / 'old.pt')


def test_collected_predictions_match_after_a_trainer_round_trip(tmp_path):
    "The Trainer's best checkpoint, loaded into a fresh model, predicts the validation set exactly as the restored model."
    best = tmp_path / 'best.pt'
    t = resumable_trainer(False, 'step', epochs=2, callbacks=[Checkpoint(best, restore_best=True)])
    t.fit()
    fresh = resumable_trainer(False, 'step').model
    load_checkpoint(fresh, best)
    a, b = collect_predictions(t.model, VALID.loader(64)), collect_predictions(fresh, VALID.loader(64))
    for p in FLOW.graph.paths: assert torch.equal(a.logits[p], b.logits[p]), p


FIXTURES = Path(__file__).parent / 'fixtures'


def test_a_checkpoint_written_by_0_5_0_still_loads(tmp_path):
    "A checkpoint committed as written by dnn_cool 0.5.0 (fixtures/make_checkpoint_v0_5_0.py), with thresholds tuned after training in the file next to it."
    import shutil
    import sys
    sys.path.insert(0, str(FIXTURES))
    from make_checkpoint_v0_5_0 import fixture_flow
    expected = torch.load(FIXTURES / 'checkpoint_v0_5_0.expected.pt', weights_only=True)
    for name in ('checkpoint_v0_5_0.pt', 'checkpoint_v0_5_0.pt.thresholds.json'): shutil.copy(FIXTURES / name, tmp_path / name)
    path = tmp_path / 'checkpoint_v0_5_0.pt'
    # into the flow rebuilt with its code, as 0.5.0 loaded it: weights, and the thresholds of the file next to it
    flow = fixture_flow()
    model = flow.torch(in_features={'cam': 4, 'features': 8})
    ckpt = load_checkpoint(model, path)
    assert ckpt['epoch'] in (0, 1) and decoder_thresholds(flow) == expected['thresholds']
    with torch.no_grad(): out = model.eval()(expected['inputs'])
    for kind in ('logits', 'decoded', 'predicted_precondition'):
        for p, v in expected[kind].items(): assert torch.equal(out[kind][p], v), (kind, p)
    # rebuilt from the file alone, the same
    rebuilt = FlowModule.from_checkpoint(path)
    assert decoder_thresholds(rebuilt.flow) == expected['thresholds']
    with torch.no_grad(): out = rebuilt(expected['inputs'])
    for p, v in expected['decoded'].items(): assert torch.equal(out['decoded'][p], v), p
    # tuned again and written into the file, the thresholds live in the checkpoint: the old file no longer counts
    update_checkpoint_thresholds(path, {'blocked': 0.8})
    assert read_checkpoint(path)['thresholds']['blocked'] == 0.8
    assert read_checkpoint(path)['thresholds']['locate.tags'] == expected['thresholds']['locate.tags']
