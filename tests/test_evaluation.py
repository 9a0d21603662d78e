"""Heavier checks of `dnn_cool.evaluation`: every metric against sklearn on exactly the masked samples, in both modes."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn.metrics import (accuracy_score, f1_score, mean_absolute_error, mean_squared_error, precision_score,
                             r2_score, recall_score, top_k_accuracy_score)

import dnn_cool.module  # noqa: F401  (adds flow.torch())
from walkthrough_data import known, walkthrough_features  # not `conftest`: tests/browser has its own, and both import as `conftest`
from dnn_cool.data import FlowDataset
from dnn_cool.evaluation import (Predictions, collect_predictions, confusion_matrices, evaluate, predict,
                                 predict_records)
from dnn_cool.flow import Project
from dnn_cool.synthetic import BOOL_TASKS, FACIAL_CHARACTERISTICS, SHIRT_NAMES
from dnn_cool.tasks import BinaryClassificationTask, BoundedRegressionTask

FACE, BODY = 'person_regression.face_regression', 'person_regression.body_regression'
FACIAL, SHIRT = f'{FACE}.facial_characteristics', f'{BODY}.shirt_type'
BOXES = [f'{FACE}.{c}' for c in ('face_x1', 'face_y1', 'face_w', 'face_h')] + \
        [f'{BODY}.{c}' for c in ('body_x1', 'body_y1', 'body_w', 'body_h')]


@pytest.fixture(scope='module')
def setup():
    "The walkthrough flow on 600 random feature vectors, some facial labels missing one by one, an untrained model."
    flow, ds = walkthrough_features(600, seed=3, features=8, partial_rows=10)
    torch.manual_seed(0)
    model = flow.torch(in_features={'features': 8})
    with torch.no_grad():
        for p in BOOL_TASKS: model.head(p).weight.mul_(3)  # varied decisions, so 'pred' mode selects both ways
    loader = ds.loader(batch_size=37, shuffle=True, generator=torch.Generator().manual_seed(1))
    preds = collect_predictions(model, loader)
    return flow, ds, model, preds


def reference_masks(preds: Predictions, mode: str) -> dict[str, np.ndarray]:
    "The walkthrough's precondition masks by hand, with numpy (independent of `precondition_masks`)."
    n = len(preds)
    if mode == 'gt':
        t = {p: preds.targets[p].numpy() for p in BOOL_TASKS}
        door = known(t['camera_blocked'], False)
        locked = door & known(t['door_open'], False)
        person_q = door & known(t['door_open'], True)
        person = person_q & known(t['person_present'], True)
    else:
        d = {p: preds.decoded[p].numpy() for p in BOOL_TASKS}
        door = ~d['camera_blocked']
        locked = door & ~d['door_open']
        person_q = door & d['door_open']
        person = person_q & d['person_present']
    out = dict(camera_blocked=np.ones(n, bool), door_open=door, door_locked=locked, person_present=person_q)
    out.update({p: person for p in BOXES + [FACIAL, SHIRT]})
    return out


def _rows(df: pd.DataFrame, path: str) -> pd.DataFrame:
    return df[df.task_path == path].set_index('metric_name')


@pytest.mark.parametrize('mode', ['gt', 'pred'])
def test_every_metric_matches_sklearn(setup, mode):
    flow, ds, model, preds = setup
    df = evaluate(preds, mode=mode, detailed=True)
    masks = reference_masks(preds, mode)
    for p in BOOL_TASKS:
        y = preds.targets[p].numpy()
        sel = masks[p] & ~np.isnan(y)
        yt, yp = y[sel], preds.decoded[p].numpy()[sel]
        r = _rows(df, p)
        assert (r.num_samples == sel.sum()).all(), p
        assert sel.sum() > 10, (p, mode)
        np.testing.assert_allclose(r.metric_res['accuracy'], accuracy_score(yt, yp))
        np.testing.assert_allclose(r.metric_res['f1_score'], f1_score(yt, yp, zero_division=0))
        np.testing.assert_allclose(r.metric_res['precision'], precision_score(yt, yp, zero_division=0))
        np.testing.assert_allclose(r.metric_res['recall'], recall_score(yt, yp, zero_division=0))

    y = preds.targets[SHIRT].numpy()
    sel = masks[SHIRT] & (y >= 0)
    scores, top1 = preds.activated[SHIRT].numpy()[sel], preds.decoded[SHIRT][:, 0].numpy()[sel]
    r = _rows(df, SHIRT)
    assert (r.num_samples == sel.sum()).all() and sel.sum() > 10
    for k in (1, 3, 5):
        np.testing.assert_allclose(r.metric_res[f'accuracy_{k}'], top_k_accuracy_score(y[sel], scores, k=k, labels=range(7)))
    for name, fn in (('f1_score', f1_score), ('precision', precision_score), ('recall', recall_score)):
        np.testing.assert_allclose(r.metric_res[name], fn(y[sel], top1, average='macro', zero_division=0))
        per_class = fn(y[sel], top1, average=None, labels=range(7), zero_division=0)
        np.testing.assert_allclose([r.metric_res[f'{name}/{c}'] for c in SHIRT_NAMES], per_class)

    for p in BOXES:
        y = preds.targets[p].numpy()
        sel = masks[p] & ~np.isnan(y)
        yp = preds.decoded[p].numpy()[sel].astype(np.float64)
        r = _rows(df, p)
        assert (r.num_samples == sel.sum()).all() and sel.sum() > 10
        mae = mean_absolute_error(y[sel], yp)
        np.testing.assert_allclose(r.metric_res['mean_absolute_error'], mae, rtol=1e-5)
        np.testing.assert_allclose(r.metric_res['mean_absolute_error_normalised'], mae / 64, rtol=1e-5)
        np.testing.assert_allclose(r.metric_res['root_mean_squared_error'], np.sqrt(mean_squared_error(y[sel], yp)), rtol=1e-5)
        np.testing.assert_allclose(r.metric_res['r2_score'], r2_score(y[sel], yp), rtol=1e-4)


@pytest.mark.parametrize('mode', ['gt', 'pred'])
def test_multilabel_with_labels_missing_one_by_one(setup, mode):
    flow, ds, model, preds = setup
    df = evaluate(preds, mode=mode, detailed=True)
    Y, D = preds.targets[FACIAL].numpy(), preds.decoded[FACIAL].numpy()
    sel = reference_masks(preds, mode)[FACIAL]
    complete = sel & ~np.isnan(Y).any(1)
    any_known = sel & ~np.isnan(Y).all(1)
    assert any_known.sum() > complete.sum()  # the per-label gaps are in the selection
    r = _rows(df, FACIAL)
    assert r.num_samples['subset_accuracy'] == complete.sum()
    assert r.num_samples['f1_score'] == any_known.sum()
    np.testing.assert_allclose(r.metric_res['subset_accuracy'], accuracy_score(Y[complete], D[complete]))
    f1s = [f1_score(Y[sel & ~np.isnan(Y[:, j]), j], D[sel & ~np.isnan(Y[:, j]), j], zero_division=0) for j in range(3)]
    np.testing.assert_allclose([r.metric_res[f'f1_score/{c}'] for c in FACIAL_CHARACTERISTICS], f1s)
    np.testing.assert_allclose(r.metric_res['f1_score'], np.mean(f1s))


def test_streamed_equals_collected(setup):
    flow, ds, model, preds = setup
    for mode in ('gt', 'pred'):
        streamed = evaluate(model, ds.loader(batch_size=64), mode=mode)
        collected = evaluate(preds, flow, mode=mode)
        pd.testing.assert_frame_equal(streamed.drop(columns='metric_res'), collected.drop(columns='metric_res'))
        np.testing.assert_allclose(streamed.metric_res, collected.metric_res, rtol=1e-6, equal_nan=True)


def test_confusion_matrices(setup):
    flow, ds, model, preds = setup
    masks = reference_masks(preds, 'pred')
    cms = confusion_matrices(preds, mode='pred')
    for p in BOOL_TASKS:
        y = preds.targets[p].numpy()
        sel = masks[p] & ~np.isnan(y)
        cm = pd.crosstab(pd.Categorical(y[sel] == 1, [False, True]), pd.Categorical(preds.decoded[p].numpy()[sel], [False, True]),
                         dropna=False)
        np.testing.assert_array_equal(cms[p].to_numpy(), cm.to_numpy())
    assert list(cms[SHIRT].index) == list(SHIRT_NAMES)


def test_predict_applies_the_cascade(setup):
    flow, ds, model, preds = setup
    df = predict(model, ds.loader(batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(5)), ranking=True)
    assert sorted(df.index) == list(range(len(ds)))
    df = df.sort_index()
    order = preds.index.argsort()
    dec = {p: v[order] for p, v in preds.decoded.items()}
    on = reference_masks(Predictions(**{**preds.__dict__, 'decoded': dec}), 'pred')
    for p in flow.graph.paths:
        assert (df[p].notna().to_numpy() == on[p]).all(), p
    for p in BOOL_TASKS:
        vals = df[p][on[p]]
        assert all(isinstance(v, bool) for v in vals)
        assert (vals.to_numpy(dtype=bool) == dec[p].numpy()[on[p]]).all()
    act = {p: v[order] for p, v in preds.activated.items()}
    for p in BOXES:
        np.testing.assert_allclose(df[p][on[p]].to_numpy(), 64 * act[p].double().numpy()[on[p]], rtol=1e-5)
    shirts = [SHIRT_NAMES[i] for i in act[SHIRT].argmax(1).tolist()]
    assert df[SHIRT][on[SHIRT]].tolist() == [s for s, o in zip(shirts, on[SHIRT]) if o]
    assert all(r[0] == s and sorted(r) == sorted(SHIRT_NAMES) for r, s in zip(df[f'{SHIRT}/ranking'][on[SHIRT]], df[SHIRT][on[SHIRT]]))
    for i in np.flatnonzero(on[FACIAL]):
        expected = [c for c, v in zip(FACIAL_CHARACTERISTICS, (act[FACIAL][i] >= 0.5).tolist()) if v]
        assert df[FACIAL][i] == expected


def test_predict_records_are_json(setup):
    flow, ds, model, preds = setup
    records = predict_records(preds, ranking=True)
    text = json.dumps(records, allow_nan=False)  # no NaN, no numpy scalars
    back = json.loads(text)
    df = predict(preds, ranking=True)
    assert [r['index'] for r in back] == df.index.tolist()
    for r, (_, row) in zip(back, df.iterrows()):
        for p in flow.graph.paths:
            v = row[p]
            if r[p] is None: assert not isinstance(v, list) and pd.isna(v)
            elif isinstance(r[p], float): assert r[p] == pytest.approx(float(v))
            else: assert r[p] == (list(v) if isinstance(v, list) else v)


def test_training_flag_restored_after_an_error(setup):
    flow, ds, model, preds = setup
    model.train()
    x, y = ds[[0, 1]]
    bad = [(x, y), ({'features': torch.randn(2, 5)}, y)]  # wrong feature size
    with pytest.raises(ValueError, match='expects 8 features'):
        collect_predictions(model, bad)
    assert model.training
    assert torch.is_grad_enabled()
    model.eval()


def _tiny():
    p = Project([BinaryClassificationTask('exists'), BoundedRegressionTask('x', 0, 10)])
    @p.add_flow
    def tiny(flow, x, out):
        out += flow.exists(x.f)
        out += flow.x(x.f) | out.exists
        return out
    return tiny


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([True, False, None]), st.one_of(st.none(), st.floats(0, 10)),
                          st.floats(-3, 3)), min_size=1, max_size=30),
       st.integers(1, 7))
def test_num_samples_property(rows, batch_size):
    "Random labels (with gaps) and features: counts and MAE follow the masking rule in both modes."
    tiny = _tiny()
    torch.manual_seed(0)
    model = tiny.torch(in_features={'f': 1})
    exists = [r[0] for r in rows]
    xs = [np.nan if r[1] is None else r[1] for r in rows]
    f = torch.tensor([[r[2]] for r in rows])
    ds = FlowDataset(tiny, {'f': f}, pd.DataFrame({'exists': pd.array(exists, dtype='boolean'), 'x': xs}))
    preds = collect_predictions(model, ds.loader(batch_size=batch_size))
    y = np.array(xs)
    for mode, cond in (('gt', np.array([e is True for e in exists])), ('pred', preds.decoded['exists'].numpy())):
        df = evaluate(preds, mode=mode)
        sel = cond & ~np.isnan(y)
        r = _rows(df, 'x')
        assert (r.num_samples == sel.sum()).all()
        if sel.sum():
            np.testing.assert_allclose(r.metric_res['mean_absolute_error'],
                                       mean_absolute_error(y[sel], preds.decoded['x'].double().numpy()[sel]), rtol=1e-5, atol=1e-6)
        else: assert np.isnan(r.metric_res['mean_absolute_error'])
        assert (_rows(df, 'exists').num_samples == sum(e is not None for e in exists)).all()


def test_flow_found_inside_a_wrapper(setup):
    "A backbone joined to a flow module: the flow is found on the inner module, and outputs line up."
    flow, ds, model, preds = setup

    class Net(torch.nn.Module):
        def __init__(self, flow_module):
            super().__init__()
            self.backbone, self.flow_module = torch.nn.Linear(4, 8), flow_module
        def forward(self, batch):
            return self.flow_module({**batch, 'features': self.backbone(batch['image'])})

    net = Net(model)
    images = torch.randn(len(ds), 4)
    wrapped = FlowDataset(flow, {'image': images}, pd.DataFrame({p: [None] * len(ds) for p in BOOL_TASKS}),
                          unlabelled=[p for p in flow.graph.paths if p not in BOOL_TASKS])
    got = collect_predictions(net, wrapped.loader(batch_size=100))
    with torch.no_grad(): direct = model.eval()({'features': net.backbone(images)})
    torch.testing.assert_close(got.activated[SHIRT], direct['activated'][SHIRT])
    assert got.flow is flow
    assert predict(got).shape == (len(ds), len(flow.graph.paths))
