"""Every task learns with the library's defaults: a conditional flow on sklearn's bundled digits (binary, 10-class,
and a narrow-range bounded regression) trained by `Trainer` reaches, task by task, a baseline fitted on the same
samples (logistic regression, ridge regression). Without the default scales (1 / the targets' std) the regression does not."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from dnn_cool import (BinaryClassificationTask, BoundedRegressionTask, ClassificationTask, FlowDataset, FlowNet,
                      Project, Trainer, seed_everything)

ROUND = [0, 6, 8, 9]  # digits drawn with a closed loop


def digits():
    """Pixels in [0, 1], and labels: is the digit round, which digit, and (round digits only) where the ink's centre
    lies across the image, as a fraction of its width: between 0.37 and 0.67, variance about 1e-3 on its [0, 1] range."""
    X, d = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    img = X.reshape(-1, 8, 8)
    centre = (img.sum(1) * np.arange(8)).sum(1) / img.sum((1, 2)) / 7
    labels = pd.DataFrame({'is_round': np.isin(d, ROUND), 'digit': d, 'centre': centre.astype(np.float64)})
    labels.loc[~labels.is_round, 'centre'] = np.nan
    return X, labels


def digits_flow():
    p = Project([BinaryClassificationTask('is_round'), ClassificationTask('digit', num_classes=10),
                 BoundedRegressionTask('centre', 0, 1)])

    @p.add_flow
    def digit_flow(flow, x, out):
        out += flow.is_round(x.features)
        out += flow.digit(x.features)
        out += flow.centre(x.features) | out.is_round
        return out
    return digit_flow


def baselines(X, labels, train, test):
    "Each task's own linear model, fitted and scored on the samples that task trains and is evaluated on."
    y, r = labels, labels.is_round.to_numpy()
    tr, te = r[train], r[test]
    return {'is_round': LogisticRegression(max_iter=3000).fit(X[train], r[train]).score(X[test], r[test]),
            'digit': LogisticRegression(max_iter=3000).fit(X[train], y.digit[train]).score(X[test], y.digit[test]),
            'centre': Ridge(1.0).fit(X[train][tr], y.centre[train][tr]).score(X[test][te], y.centre[test][te])}


def train_and_score(X, labels, train, test, **loss_kwargs):
    flow = digits_flow()
    ds = {k: FlowDataset(flow, {'image': torch.from_numpy(X[i])}, labels.iloc[i].reset_index(drop=True))
          for k, i in (('train', train), ('test', test))}
    seed_everything(0)
    net = FlowNet(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), flow.torch(in_features={'features': 64}))
    criterion = flow.get_loss(**loss_kwargs)
    epochs, loader = 60, ds['train'].loader(64, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=epochs * len(loader))
    Trainer(net, criterion, optimizer, loader, epochs=epochs, scheduler=scheduler, scheduler_interval='step',
            train_metrics=False, progress=False).fit()
    x, y = ds['test'][list(range(len(ds['test'])))]
    net.eval()
    with torch.no_grad():
        decoded = net(x)['decoded']
    r = y['is_round'] > 0.5
    return criterion, {'is_round': (decoded['is_round'] == r).float().mean().item(),
                       'digit': (decoded['digit'][:, 0] == y['digit']).float().mean().item(),
                       'centre': r2_score(y['centre'][r].numpy(), decoded['centre'][r].numpy())}


@pytest.fixture(scope='module')
def data():
    X, labels = digits()
    train, test = train_test_split(np.arange(len(X)), test_size=0.3, random_state=0, stratify=labels.digit)
    return X, labels, train, test, baselines(X, labels, train, test)


def test_every_task_reaches_its_baseline_with_the_defaults(data):
    X, labels, train, test, base = data
    criterion, ours = train_and_score(X, labels, train, test)
    print(f"\nbaselines {base}\ndnn_cool  {ours}\nscales {criterion.scales}")
    assert criterion.scales_fitted and 20 < criterion.scales['centre'] < 40  # fitted by the Trainer: 1 / std
    assert ours['is_round'] >= base['is_round'] - 0.01
    assert ours['digit'] >= base['digit'] - 0.01
    assert ours['centre'] >= base['centre'] - 0.02


def test_without_scales_the_narrow_regression_falls_short(data):
    "The control: the same run with the plain sum of losses leaves the regression well below its ridge baseline."
    X, labels, train, test, base = data
    _, raw = train_and_score(X, labels, train, test, normalize=False)
    print(f"\nwithout scales {raw}")
    assert raw['centre'] < base['centre'] - 0.03
