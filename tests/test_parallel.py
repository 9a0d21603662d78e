"""`Trainer(balance_dataparallel_memory=True)`: replicas reduce losses and metric statistics themselves. On the CPU
(no GPUs: nn.DataParallel runs one replica) the epochs equal those of the plain trainer; with 2+ GPUs the first one
holds less memory than under plain nn.DataParallel (skipped without them)."""
import pytest
import torch
import torch.nn as nn

from dnn_cool import FlowDataset, FlowNet, MaskedLanguageModelingTask, Project, Trainer, seed_everything
from dnn_cool.synthetic import make_synthetic, synthetic_project


def fit(balance, device='cpu', epochs=2):
    flow = synthetic_project().flows['full_flow']
    data = make_synthetic(192, seed=0)
    g = torch.Generator().manual_seed(0)
    ds = FlowDataset(flow, {'features': torch.randn(192, 16, generator=g)}, data.labels)
    seed_everything(0)
    model = FlowNet(None, flow.torch(in_features={'features': 16}))
    trainer = Trainer(model, flow.get_loss(), torch.optim.Adam(model.parameters(), lr=1e-2),
                      ds.loader(32, shuffle=True, generator=torch.Generator().manual_seed(0)), ds.loader(64),
                      epochs=epochs, progress=False, device=device, balance_dataparallel_memory=balance)
    return trainer.fit(), model


def test_balanced_trainer_equals_plain_trainer():
    (plain, m0), (balanced, m1) = fit(False), fit(True)
    for a, b in zip(plain.records, balanced.records):
        assert a.keys() == b.keys()
        for k in a: assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    for (k, v), w in zip(m0.state_dict().items(), m1.state_dict().values()): torch.testing.assert_close(v, w, msg=k)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2+ GPUs')
def test_balanced_dataparallel_holds_less_on_the_first_gpu():
    "A language-model head over a large vocabulary: plain DataParallel gathers every replica's logits on GPU 0."
    p = Project([MaskedLanguageModelingTask('mlm', vocab_size=8192)])

    @p.add_flow
    def lm(flow, x, out):
        out += flow.mlm(x.tokens)
        return out
    bs, T, H = 64, 128, 64
    x = {'tokens': torch.randn(bs, T, H, device='cuda')}
    y = {'mlm': torch.randint(0, 8192, (bs, T), device='cuda')}
    peaks = {}
    for balance in (False, True):
        model = lm.torch(in_features={'tokens': H}).cuda()
        crit = lm.get_loss()
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(0)
        if balance:
            from dnn_cool import BalancedDataParallel
            BalancedDataParallel(model, crit).step(x, y).total.backward()
        else:
            crit(nn.DataParallel(model)(x), y).backward()
        torch.cuda.synchronize()
        peaks[balance] = torch.cuda.max_memory_allocated(0)
    print(f"\nGPU 0 peak: plain DataParallel {peaks[False] / 2**20:.0f} MiB, balanced {peaks[True] / 2**20:.0f} MiB")
    assert peaks[True] < peaks[False]
