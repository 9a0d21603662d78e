"""The flow module stays an ordinary module: torch.compile without graph breaks, DDP without unused parameters,
state dicts that load into a fresh model."""
import os

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import dnn_cool  # noqa: F401  (attaches flow.torch / flow.get_loss)
from dnn_cool.data import FlowDataset
from dnn_cool.synthetic import make_synthetic, synthetic_project


def _batch(n=32, seed=0):
    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    ds = FlowDataset(flow, {'features': torch.randn(n, 24, generator=g)}, data.labels)
    return flow, ds[list(range(n))]


def test_compile_fullgraph_matches_eager():
    """Module and loss compile as one graph (any graph break raises): the same loss and the same gradient of every
    parameter, with fused groups (4 binary heads, 8 box regressions), missing labels and chained preconditions."""
    flow, (x, y) = _batch()
    model = flow.torch(in_features={'features': 24}).train()
    assert any(g.fused for g in model.groups)
    crit = flow.get_loss()

    def step(batch, targets):
        return crit(model(batch), targets)

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = fn(x, y)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}

    eager_loss, eager_grads = loss_and_grads(step)
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(step, backend='aot_eager', fullgraph=True))
    torch.testing.assert_close(compiled_loss, eager_loss)
    for k, g in eager_grads.items():
        torch.testing.assert_close(compiled_grads[k], g, msg=k)
    model.eval()
    out = torch.compile(model, backend='aot_eager', fullgraph=True)(x)
    with torch.no_grad():
        ref = model(x)
    for kind in ('logits', 'activated', 'decoded', 'predicted_precondition'):
        for p in ref[kind]:
            torch.testing.assert_close(out[kind][p], ref[kind][p])


@pytest.fixture
def gloo_group():
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', '29531')
    dist.init_process_group('gloo', rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_every_head_gets_a_gradient(gloo_group):
    flow, (x, y) = _batch()
    model = DDP(flow.torch(in_features={'features': 24}).train(), find_unused_parameters=False)
    loss = flow.get_loss()(model(x), y)
    loss.backward()  # DDP raises at the next step if a parameter took no part; check every grad directly too
    for name, p in model.module.named_parameters():
        assert p.grad is not None, name


def test_state_dict_round_trip(tmp_path):
    flow, (x, _) = _batch()
    model = flow.torch(in_features={'features': 24}).eval()
    torch.save(model.state_dict(), tmp_path / 'model.pt')
    fresh = synthetic_project().flows['full_flow'].torch(in_features={'features': 24}).eval()
    fresh.load_state_dict(torch.load(tmp_path / 'model.pt', weights_only=True))
    with torch.no_grad():
        a, b = model(x), fresh(x)
    for p in a['logits']:
        torch.testing.assert_close(a['logits'][p], b['logits'][p])
