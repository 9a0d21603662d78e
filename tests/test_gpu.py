"""GPU checks (skipped without CUDA): training and eval steps make no host sync.

`torch.cuda.set_sync_debug_mode('error')` raises on any synchronising call (`.item()`, boolean indexing, a blocking
copy of a CPU tensor, ...). The flow uses pos_weight, class weights and per-label thresholds, whose constants must be
copied to the device once (during the warm-up step), not on every batch."""
import pandas as pd
import pytest
import torch

from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask, FlowDataset, FlowMetrics,
                      MultilabelClassificationTask, Project)
from dnn_cool.core import to_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def test_train_and_eval_steps_never_sync():
    project = Project([BinaryClassificationTask('blocked', pos_weight=3.0),
                       BinaryClassificationTask('person'),
                       ClassificationTask('shirt', num_classes=4, class_weights=[1.0, 2.0, 1.0, 0.5]),
                       MultilabelClassificationTask('face', num_labels=3, threshold=[0.3, 0.5, 0.7]),
                       BoundedRegressionTask('x', 0, 64)])

    @project.add_flow
    def person_flow(flow, x, out):
        out += flow.shirt(x.f)
        out += flow.face(x.f)
        out += flow.x(x.f)
        return out

    @project.add_flow
    def full(flow, x, out):
        out += flow.blocked(x.f)
        out += flow.person(x.f) | ~out.blocked
        out += flow.person_flow(x.f) | out.person
        return out

    n = 256
    g = torch.Generator().manual_seed(0)
    labels = pd.DataFrame({'blocked': (torch.rand(n, generator=g) < 0.3).numpy(),
                           'person': (torch.rand(n, generator=g) < 0.5).numpy(),
                           'shirt': torch.randint(0, 4, (n,), generator=g).numpy(),
                           'face': list((torch.rand(n, 3, generator=g) < 0.5).numpy()),
                           'x': (torch.rand(n, generator=g) * 64).numpy()})
    ds = FlowDataset(full, {'f': torch.randn(n, 32, generator=g)}, labels)
    x, y = to_device(ds[list(range(n))], 'cuda')
    model = full.torch(in_features={'f': 32}).cuda()
    crit, opt, metrics = full.get_loss(), torch.optim.SGD(model.parameters(), lr=0.1), FlowMetrics(full)

    def step():
        model.train()
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        metrics.update(model(x), y)
        model.eval()
        with torch.no_grad():
            metrics.update(model(x), y)
        return loss

    _never_syncs(step)


def test_fused_flow_step_never_syncs():
    """The walkthrough flow (fused binary heads and box regressions, preconditions, multilabel, classification), a
    learned loss weighting and the default variance scales: forward, loss, backward, optimizer step and fused metric
    updates (train and eval) under `set_sync_debug_mode('error')`."""
    from dnn_cool import FlowNet, UncertaintyWeighting
    from dnn_cool.synthetic import make_synthetic, synthetic_project
    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(256, seed=0)
    ds = FlowDataset(flow, {'features': torch.randn(256, 64)}, data.labels)
    x, y = to_device(ds[list(range(256))], 'cuda')
    model = FlowNet(None, flow.torch(in_features={'features': 64})).cuda()
    assert any(g.fused for g in model.flow_module.groups)
    crit = flow.get_loss(weighting=UncertaintyWeighting(flow)).fit_scales(ds).cuda()
    opt = torch.optim.Adam([*model.parameters(), *crit.parameters()], lr=1e-3)
    metrics = FlowMetrics(flow)

    def step():
        model.train()
        out = model(x)
        loss = crit(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        metrics.update(out, y)
        model.eval()
        with torch.no_grad():
            metrics.update(model(x), y)
        return loss

    _never_syncs(step)


def _never_syncs(step):
    "Run `step` once to warm up (constants reach the device), then again with any host sync an error."
    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        loss = step()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.isfinite(loss).item()
