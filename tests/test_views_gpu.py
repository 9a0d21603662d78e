"""The explanation and best/worst views of a model on the GPU (the CUDA case skips without CUDA; the CPU case runs
everywhere and checks the test itself): outputs come back to the CPU once, and match a CPU copy of the model."""
import numpy as np
import pytest
import torch

from dnn_cool import FlowDataset, FlowNet, best_worst_inputs, make_synthetic, synthetic_project
from dnn_cool.demo import SyntheticBackbone
from dnn_cool.views.explanations import ExplanationExplorer

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA'))]


def net(flow):
    return FlowNet(SyntheticBackbone(width=8, out_features=16), flow.torch(in_features={'features': 16}))


@pytest.mark.parametrize('device', DEVICES)
def test_views_of_a_model_on(device):
    torch.manual_seed(0)
    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(64, seed=0)
    ds = FlowDataset(flow, {'image': data.images}, data.labels)
    cpu = net(flow)
    model = net(flow)
    model.load_state_dict(cpu.state_dict())
    model.to(device)

    ex, ref = ExplanationExplorer(model, ds, batch_size=16), ExplanationExplorer(cpu, ds, batch_size=16)
    assert all(t.device.type == 'cpu' for t in ex.predictions.logits.values())
    for p in flow.graph.paths:
        np.testing.assert_array_equal(ex.counted[p], ref.counted[p])
        np.testing.assert_allclose(ex.losses[p], ref.losses[p], rtol=1e-4, atol=1e-5)
    ex.pick(filter='highest_loss', task='camera_blocked')
    assert f'data-sample="{ex.index}"' in ex.to_html() and 'data:image/png;base64,' in ex.to_html()

    result = best_worst_inputs(model, ds.loader(batch_size=16), n=3)
    assert result.predictions.index.device.type == 'cpu'
    ranked = {int(i) for bw in result.values() for i in (*bw.best_indices, *bw.worst_indices)}
    assert set(result.predictions.index.tolist()) == ranked
    assert result.view().to_html().count('data:image/png;base64,') >= 6
