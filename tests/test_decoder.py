"""Heavier checks of `dnn_cool.decoder`: tuned thresholds against `tune_threshold` by hand on independently masked
samples, precondition isolation, JSON round trips, and the module using what was loaded."""
import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

import dnn_cool.module  # noqa: F401  (adds flow.torch())
from walkthrough import known, walkthrough_features
from dnn_cool.decoder import FlowDecoder, tuned_thresholds, tuning_table
from dnn_cool.evaluation import collect_predictions, evaluate
from dnn_cool.synthetic import BOOL_TASKS, FACIAL_CHARACTERISTICS, synthetic_project
from dnn_cool.thresholds import load_thresholds
from dnn_cool.tuning import ThresholdResult, tune_threshold

FACIAL = 'person_regression.face_regression.facial_characteristics'
SHIRT = 'person_regression.body_regression.shirt_type'


@pytest.fixture
def setup():
    "A fresh walkthrough flow (its own task objects, so thresholds start at 0.5) with informative random scores."
    flow, ds = walkthrough_features(800, seed=4, features=16, partial_rows=12)
    fc = ds.targets[FACIAL]
    # Let feature i lean towards task i's label, so the tuned thresholds are not trivial.
    feats = ds.inputs['features']
    for i, p in enumerate(BOOL_TASKS):
        feats[:, i] += 1.5 * torch.nan_to_num(ds.targets[p], nan=0.5)
    for j in range(3): feats[:, 4 + j] += 1.5 * torch.nan_to_num(fc[:, j], nan=0.5)
    torch.manual_seed(0)
    model = flow.torch(in_features={'features': 16})
    with torch.no_grad():
        for i, p in enumerate(BOOL_TASKS):
            w = torch.zeros(16); w[i] = 2.0
            model.head(p).weight.copy_(w[None]); model.head(p).bias.fill_(-1.2)
        w = torch.zeros(3, 16); w[[0, 1, 2], [4, 5, 6]] = 2.0
        model.head(FACIAL).weight.copy_(w); model.head(FACIAL).bias.fill_(-0.5)
    preds = collect_predictions(model, ds.loader(batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(1)))
    return flow, ds, model, preds


def gt_masks(preds) -> dict:
    "Ground-truth precondition masks of the walkthrough, by hand with numpy."
    t = {p: preds.targets[p].numpy() for p in BOOL_TASKS}
    door = known(t['camera_blocked'], False)
    person_q = door & known(t['door_open'], True)
    return dict(camera_blocked=np.ones(len(preds), bool), door_open=door, door_locked=door & known(t['door_open'], False),
                person_present=person_q, **{FACIAL: person_q & known(t['person_present'], True)})


def by_hand(preds, objective='f1', **kw) -> dict:
    "`tune_threshold` on the samples selected with numpy boolean indexing, per binary task and label."
    masks, out = gt_masks(preds), {}
    for p in BOOL_TASKS:
        y, s = preds.targets[p].numpy(), preds.activated[p].numpy()
        sel = masks[p] & ~np.isnan(y)
        out[p] = tune_threshold(s[sel], y[sel], objective, **kw)
    Y, S = preds.targets[FACIAL].numpy(), preds.activated[FACIAL].numpy()
    out[FACIAL] = []
    for j in range(3):
        sel = masks[FACIAL] & ~np.isnan(Y[:, j])
        out[FACIAL].append(tune_threshold(S[sel, j], Y[sel, j], objective, **kw))
    return out


@pytest.mark.parametrize('objective, kw', [('f1', {}), ('fbeta', dict(beta=2.0)), ('mcc', {}),
                                           ('recall', dict(constraint=('precision', '>=', 0.6)))])
def test_tuned_equals_by_hand(setup, objective, kw):
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    results = decoder.tune(preds, objective=objective, **kw)
    expected = by_hand(preds, objective, **kw)
    assert set(results) == set(expected)
    for p in BOOL_TASKS:
        assert isinstance(results[p], ThresholdResult)
        assert results[p].threshold == expected[p].threshold, p
        assert results[p].score == pytest.approx(expected[p].score)
    assert [r.threshold for r in results[FACIAL]] == [r.threshold for r in expected[FACIAL]]
    assert [r.label for r in results[FACIAL]] == list(FACIAL_CHARACTERISTICS)
    assert decoder.thresholds() == tuned_thresholds(results)  # applied
    table = tuning_table(results).set_index(['task_path', 'label'])
    masks = gt_masks(preds)
    assert table.num_samples[('door_open', '')] == (masks['door_open'] & ~np.isnan(preds.targets['door_open'].numpy())).sum()
    assert table.threshold[(FACIAL, 'bearded')] == expected[FACIAL][2].threshold


def test_dict_form_equals_predictions_form(setup):
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    a = decoder.tune(preds, apply=False)
    b = decoder.tune({p: v.numpy() for p, v in preds.activated.items()}, preds.targets, preds.precondition, apply=False)
    assert tuned_thresholds(a) == tuned_thresholds(b)
    assert decoder.thresholds()['door_open'] == 0.5  # apply=False changed nothing
    c = decoder.tune(preds, 'fbeta', beta=0.5, apply=False)  # the objective may come second
    assert c['door_open'].objective == 'fbeta'


def test_outside_samples_do_not_matter(setup):
    "Scores outside the gt precondition, and of missing labels, can be anything: the thresholds stay."
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    before = tuned_thresholds(decoder.tune(preds, apply=False))
    g = torch.Generator().manual_seed(9)
    activated = dict(preds.activated)
    n_changed = 0
    for p in BOOL_TASKS:
        out = ~(preds.precondition[p] & preds.available[p])
        activated[p] = torch.where(out, torch.rand(len(preds), generator=g), activated[p])
        n_changed += int(out.sum())
    Y = preds.targets[FACIAL]
    out = ~preds.precondition[FACIAL][:, None] | Y.isnan()
    activated[FACIAL] = torch.where(out, torch.rand(Y.shape, generator=g), activated[FACIAL])
    assert n_changed > 100 and out.any(1).sum() > out.all(1).sum()
    after = tuned_thresholds(decoder.tune(activated, preds.targets, preds.precondition, apply=False))
    assert after == before
    # ... while the precondition itself does matter: tuning on every labelled sample changes something
    ignoring = tuned_thresholds(decoder.tune(activated, preds.targets, 'none', apply=False))
    assert ignoring != before
    # and forgetting it is an error, not a silent switch to every labelled sample
    with pytest.raises(ValueError, match="have preconditions: pass precondition="):
        decoder.tune(activated, preds.targets, apply=False)


def test_f1_not_worse_than_half(setup):
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    results = decoder.tune(preds)
    masks = gt_masks(preds)
    improved = 0
    for p in BOOL_TASKS:
        y, s = preds.targets[p].numpy(), preds.activated[p].numpy()
        sel = masks[p] & ~np.isnan(y)
        tuned, half = f1_score(y[sel], s[sel] >= results[p].threshold), f1_score(y[sel], s[sel] >= 0.5)
        assert tuned >= half - 1e-12, p
        assert tuned == pytest.approx(results[p].score)
        improved += tuned > half
    assert improved >= 1


def test_module_uses_loaded_thresholds_and_evaluate_agrees(setup):
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    results = decoder.tune(preds)
    after = collect_predictions(model, ds.loader(batch_size=128))  # a fresh forward pass with the tuned thresholds
    for p in BOOL_TASKS:
        assert torch.equal(after.decoded[p], after.activated[p] >= results[p].threshold)
    t = torch.tensor([r.threshold for r in results[FACIAL]])
    assert torch.equal(after.decoded[FACIAL], after.activated[FACIAL] >= t)
    ev = evaluate(after)  # same gt masks: its F1 is the tuned objective
    for p in BOOL_TASKS:
        f1 = ev[(ev.task_path == p) & (ev.metric_name == 'f1_score')].metric_res.item()
        assert f1 == pytest.approx(results[p].score), p


def test_json_round_trip(setup, tmp_path):
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    decoder.tune(preds)
    tuned = decoder.thresholds()
    path = decoder.save(tmp_path / 'thresholds.json')
    doc = json.loads(path.read_text())  # plain JSON, not a pickle
    assert doc['thresholds'] == tuned
    with pytest.raises(pickle.UnpicklingError): pickle.loads(path.read_bytes())
    assert load_thresholds(path) == tuned
    fresh = synthetic_project().flows['full_flow'].get_decoder()  # another process: new task objects at 0.5
    assert fresh.thresholds()['door_open'] == 0.5
    assert fresh.load(path).thresholds() == tuned
    # float32 thresholds survive the text round trip exactly, so decisions are identical
    assert all(np.float32(v) == v for v in tuned.values() if isinstance(v, float))


def test_errors_name_the_task(setup, tmp_path):
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    with pytest.raises(KeyError, match="no task 'nope'"): decoder.load_thresholds({'nope': 0.3})
    with pytest.raises(ValueError, match=f"task '{FACIAL}' has 3 labels"): decoder.load_thresholds({FACIAL: [0.1, 0.2, 0.3, 0.4]})
    with pytest.raises(ValueError, match=f"task '{SHIRT}' has no tunable threshold"): decoder.tune(preds, tasks=[SHIRT])
    no_gt = collect_predictions(model, [{'features': ds.inputs['features'][:10]}])
    with pytest.raises(ValueError, match='no labels'): decoder.tune(no_gt)
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'format': 'dnn_cool.thresholds', 'version': 1, 'thresholds': {'door_open': 0.3, FACIAL: [0.5]}}))
    with pytest.raises(ValueError, match=f"task '{FACIAL}' has 3 labels"): decoder.load(bad)
    assert decoder.thresholds()['door_open'] == 0.5  # nothing applied
    nothing = {**preds.precondition, 'door_locked': torch.zeros(len(preds), dtype=torch.bool)}
    with pytest.raises(ValueError, match="task 'door_locked': no samples"):
        decoder.tune(preds.activated, preds.targets, nothing)
    assert decoder.thresholds()['camera_blocked'] == 0.5  # all-or-nothing: earlier tasks were not applied


def test_flow_decoder_decodes_like_the_module(setup):
    flow, ds, model, preds = setup
    decoder = flow.get_decoder()
    decoder.load_thresholds({'door_open': 0.7, FACIAL: 0.3})
    after = collect_predictions(model, ds.loader(batch_size=256))
    for p, d in decoder(after.activated).items():
        assert torch.equal(d, after.decoded[p]), p
    assert isinstance(flow.get_decoder(), FlowDecoder)
