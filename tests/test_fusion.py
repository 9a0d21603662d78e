"""Fused heads through a whole training run: a fused and an unfused model (same weights) trained by the Trainer take
the same steps, per-task freezing and per-task learning rates inside a fused group act on exactly that task, and
checkpoints load across fused and unfused models."""
import copy

import torch

from dnn_cool import (FlowDataset, FlowNet, MaskedLanguageModelingTask, MultilabelClassificationTask, Project, Trainer,
                      seed_everything)
from dnn_cool.synthetic import make_synthetic, synthetic_project


def walkthrough(n=160):
    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(n, seed=0)
    g = torch.Generator().manual_seed(0)
    return flow, FlowDataset(flow, {'features': torch.randn(n, 12, generator=g)}, data.labels)


def fit(model, flow, ds, epochs=2, **kwargs):
    trainer = Trainer(model, flow.get_loss(fuse=kwargs.pop('fuse_loss', True)), kwargs.pop('optimizer'),
                      ds.loader(32, shuffle=True, generator=torch.Generator().manual_seed(0)), ds.loader(64),
                      epochs=epochs, progress=False, **kwargs)
    return trainer.fit()


def test_fused_and_unfused_train_alike():
    flow, ds = walkthrough()
    seed_everything(0)
    fused = FlowNet(None, flow.torch(in_features={'features': 12}))
    alone = FlowNet(None, flow.torch(in_features={'features': 12}, fuse=False))
    alone.load_state_dict(fused.state_dict())
    assert sum(g.fused for g in fused.flow_module.groups) >= 2 and not any(g.fused for g in alone.flow_module.groups)
    h1 = fit(fused, flow, ds, optimizer=torch.optim.Adam(fused.parameters(), lr=1e-2))
    h2 = fit(alone, flow, ds, optimizer=torch.optim.Adam(alone.parameters(), lr=1e-2), fuse_loss=False)
    for a, b in zip(h1.records, h2.records):
        for k in a: assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(b[k])), k
    for k, v in fused.state_dict().items(): torch.testing.assert_close(v, alone.state_dict()[k], atol=1e-5, rtol=1e-4)


def test_freezing_and_learning_rates_inside_a_fused_group():
    flow, ds = walkthrough()
    seed_everything(0)
    net = FlowNet(None, flow.torch(in_features={'features': 12}))
    binary = next(g for g in net.flow_module.groups if g.fused and 'door_open' in g.paths)
    assert {'camera_blocked', 'door_open', 'door_locked', 'person_present'} <= set(binary.paths)
    net.freeze(tasks=['door_locked'])
    groups = net.param_groups(1e-2, task_lr={'door_open': 0.0, 'person_regression.face_regression.face_x1': 0.0})
    before = copy.deepcopy(net.state_dict())
    fit(net, flow, ds, epochs=1, optimizer=torch.optim.SGD(groups, lr=1e-2, momentum=0.9, weight_decay=1e-2))
    after = net.state_dict()
    unchanged = {'door_locked', 'door_open', 'person_regression.face_regression.face_x1'}
    for k in before:
        task = k[len('flow_module.heads.'):].rsplit('.', 1)[0]
        assert torch.equal(before[k], after[k]) == (task in unchanged), k  # exactly those, in fused groups
    assert any(k.startswith('flow_module.heads.person_regression.face_regression.face_x1.') for k in after)  # dotted keys


def test_checkpoint_loads_across_fusion(tmp_path):
    flow, ds = walkthrough(32)
    seed_everything(0)
    fused = flow.torch(in_features={'features': 12})
    torch.save(fused.state_dict(), tmp_path / 'heads.pt')
    alone = synthetic_project().flows['full_flow'].torch(in_features={'features': 12}, fuse=False)
    alone.load_state_dict(torch.load(tmp_path / 'heads.pt', weights_only=True))
    x, _ = ds[list(range(32))]
    fused.eval(), alone.eval()
    with torch.no_grad():
        a, b = fused(x), alone(x)
    for p in a['logits']: torch.testing.assert_close(a['logits'][p], b['logits'][p])


def test_token_heads_fuse():
    "Two language-model heads on one (bs, T, H) input: the fused output's task dim is 2, not 1; loss and grads agree."
    p = Project([MaskedLanguageModelingTask(f'mlm{i}', vocab_size=7) for i in range(2)] +
                [MultilabelClassificationTask(f'tag{i}', num_labels=2) for i in range(2)])

    @p.add_flow
    def tokens(flow, x, out):
        out += flow.mlm0(x.tokens)
        out += flow.mlm1(x.tokens)
        out += flow.tag0(x.doc)
        out += flow.tag1(x.doc)
        return out
    torch.manual_seed(0)
    fused, alone = (tokens.torch(in_features={'tokens': 5, 'doc': 3}, fuse=f) for f in (True, False))
    alone.load_state_dict(fused.state_dict())
    assert [len(g) for g in fused.groups] == [2, 2]
    x = {'tokens': torch.randn(4, 3, 5, requires_grad=True), 'doc': torch.randn(4, 3)}
    y = {f'mlm{i}': torch.where(torch.rand(4, 3) < 0.5, -100, torch.randint(0, 7, (4, 3))) for i in range(2)}
    y |= {f'tag{i}': torch.randint(0, 2, (4, 2)).float() for i in range(2)}
    grads = []
    for m, fuse in ((fused, True), (alone, False)):
        out = m(x)
        assert out['logits']['mlm1'].shape == (4, 3, 7)
        x['tokens'].grad = None
        loss = tokens.get_loss(fuse=fuse)(out, y)
        loss.backward()
        per_task = [getattr(m.head(p), n).grad for p in tokens.graph.paths for n in ('weight', 'bias')]
        grads.append((loss.detach(), *per_task, x['tokens'].grad))
    for a, b in zip(*grads): torch.testing.assert_close(a, b)


def many_binary_flow(n=16):
    "`t0` and `n - 1` binary siblings behind it: one fused group of two precondition classes."
    from dnn_cool import BinaryClassificationTask
    p = Project([BinaryClassificationTask(f't{i}') for i in range(n)])
    def body(flow, x, out):
        for i in range(n): out += getattr(flow, f't{i}')(x.f) | out.t0 if i else flow.t0(x.f)
        return out
    return p.add_flow(body, name='many')


def test_a_training_step_makes_no_per_task_tensor():
    "Module forward, loss, backward and the epoch sums on a fused flow read blocks only: no task's column is ever made."
    import pandas as pd
    from dnn_cool import EpochLoss
    from dnn_cool.fusion import TaskTensors
    flow = many_binary_flow()
    labels = pd.DataFrame((torch.rand(64, 16) < 0.5).numpy(), columns=flow.graph.paths).astype('boolean')
    ds = FlowDataset(flow, {'f': torch.randn(64, 5)}, labels)
    model, criterion = flow.torch(in_features={'f': 5}), flow.get_loss()
    made = []
    original = TaskTensors.__getitem__
    def counting(self, path):
        if path not in self._given and path not in self._views: made.append(path)
        return original(self, path)
    TaskTensors.__getitem__ = counting
    try:
        x, y = ds[list(range(32))]
        out = model(x)
        loss = criterion(out, y)
        loss.backward()
        EpochLoss().update(criterion.last, loss, 32)
    finally: TaskTensors.__getitem__ = original
    assert made == [], made  # nobody read a task's column, so none was made
    assert len(criterion.last.per_task) == 16  # and they are there when asked for


def test_data_parallel_gather_rebuilds_outputs_task_by_task(monkeypatch):
    "nn.DataParallel's gather sees a dict: the gathered outputs hold each task's rows of both replicas, in order."
    from torch.nn.parallel import scatter_gather
    monkeypatch.setattr(scatter_gather.Gather, 'apply', lambda device, dim, *ts: torch.cat(ts, dim))  # gather needs GPUs
    flow = many_binary_flow(4)
    model = flow.torch(in_features={'f': 5}).eval()
    x = torch.randn(6, 5)
    with torch.no_grad(): whole, a, b = model({'f': x}), model({'f': x[:4]}), model({'f': x[4:]})
    gathered = scatter_gather.gather([a, b], 'cpu')
    for kind in ('logits', 'decoded', 'predicted_precondition'):
        assert list(gathered[kind]) == flow.graph.paths
        for p in flow.graph.paths: torch.testing.assert_close(gathered[kind][p], whole[kind][p])
