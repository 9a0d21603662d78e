"""dnn_cool.tuning against independent references: brute-force sweeps scored by sklearn.metrics, and sklearn's
TunedThresholdClassifierCV. The brute forces below use only numpy and sklearn, never dnn_cool's own code."""
import json, warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st
from sklearn import metrics as skm
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import TunedThresholdClassifierCV, train_test_split

from dnn_cool.thresholds import load_thresholds, save_thresholds
from dnn_cool.tuning import COUNT_OBJECTIVES, confusion_curve, tune_multilabel, tune_threshold

NAMES = ['f1', 'fbeta', 'precision', 'recall', 'accuracy', 'balanced_accuracy', 'mcc']
BETA = 0.5
SETTINGS = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def sk_metric(name, y, pred, w=None, beta=BETA):
    """sklearn's value of a count objective for predictions `pred` (zero_division=0 where sklearn has it)."""
    y, pred, kw = np.asarray(y, int), np.asarray(pred, int), dict(sample_weight=w)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # UndefinedMetricWarning etc. on one-class inputs
        if name == 'f1': return skm.f1_score(y, pred, zero_division=0, **kw)
        if name == 'fbeta': return skm.fbeta_score(y, pred, beta=beta, zero_division=0, **kw)
        if name == 'precision': return skm.precision_score(y, pred, zero_division=0, **kw)
        if name == 'recall': return skm.recall_score(y, pred, zero_division=0, **kw)
        if name == 'accuracy': return skm.accuracy_score(y, pred, **kw)
        if name == 'balanced_accuracy': return skm.balanced_accuracy_score(y, pred, **kw)
        if name == 'mcc': return skm.matthews_corrcoef(y, pred, **kw)
    raise KeyError(name)


def all_thresholds(s):
    """Every threshold that gives a distinct partition: each distinct score, and +inf (nothing positive), highest first."""
    return [np.inf] + sorted(set(np.asarray(s).tolist()), reverse=True)


def brute_best(values, thresholds, feasible=None, tol=1e-9):
    """(best value, highest threshold reaching it within `tol`) among feasible thresholds."""
    feasible = [True] * len(values) if feasible is None else feasible
    cand = [(v, t) for v, t, f in zip(values, thresholds, feasible) if f and not np.isnan(v)]  # NaN never wins
    best = max(v for v, _ in cand)
    return best, max(t for v, t in cand if v >= best - tol)


@st.composite
def samples(draw, max_size=10, weights=False):
    """Small scored samples with many ties; labels sometimes all of one class; optional integer weights (0 allowed)."""
    n = draw(st.integers(1, max_size))
    s = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))) / 6
    kind = draw(st.sampled_from(['mixed', 'mixed', 'all0', 'all1']))
    y = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))) if kind == 'mixed' else np.full(n, kind == 'all1')
    w = None
    if weights:
        w = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), float)
        if w.sum() == 0: w[0] = 1.
    return s, y.astype(int), w


# (b) the curve's counts equal a brute-force count at every threshold
@SETTINGS
@given(samples(max_size=15, weights=True), st.booleans())
def test_curve_counts_brute_force(data, use_weights):
    s, y, w = data
    w = w if use_weights else np.ones(len(s))
    c = confusion_curve(s, y, w if use_weights else None)
    assert c.thresholds[0] > s.max() and list(c.thresholds[1:]) == sorted(set(s.tolist()), reverse=True)
    for j, t in enumerate(c.thresholds):
        pred = s >= t
        ref = [w[pred & (y == 1)].sum(), w[pred & (y == 0)].sum(), w[~pred & (y == 1)].sum(), w[~pred & (y == 0)].sum()]
        np.testing.assert_allclose([c.tp[j], c.fp[j], c.fn[j], c.tn[j]], ref, atol=1e-12)


# (a) the optimum of every count objective equals a brute-force sweep scored by sklearn
@SETTINGS
@given(samples(weights=True), st.booleans())
def test_optimum_equals_brute_force(data, use_weights):
    s, y, w = data
    w = w if use_weights else None
    ts = all_thresholds(s)
    for name in NAMES:
        r = tune_threshold(s, y, name, beta=BETA if name == 'fbeta' else 1.0, sample_weight=w)
        best, t_best = brute_best([sk_metric(name, y, s >= t, w) for t in ts], ts)
        assert r.score == pytest.approx(best, abs=1e-9), name
        assert sk_metric(name, y, s >= r.threshold, w) == pytest.approx(best, abs=1e-9), name  # the threshold reaches it
        np.testing.assert_array_equal(s >= r.threshold, s >= t_best, err_msg=f'{name}: tie rule (highest threshold)')


# (d) constrained forms, by brute force
@SETTINGS
@given(samples(), st.sampled_from(NAMES), st.sampled_from(NAMES), st.sampled_from(['>=', '>', '<=', '<']),
       st.sampled_from([0.0, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0]))
def test_constrained_brute_force(data, objective, cname, op, bound):
    s, y, _ = data
    ts = all_thresholds(s)
    vals = [sk_metric(objective, y, s >= t) for t in ts]
    cvals = [sk_metric(cname, y, s >= t) for t in ts]
    eq = [abs(c - bound) <= 1e-9 for c in cvals]  # values at the bound count as equal to it
    ok = [{'>=': c > bound or e, '>': c > bound and not e, '<=': c < bound or e, '<': c < bound and not e}[op]
          for c, e in zip(cvals, eq)]
    beta = BETA if 'fbeta' in (objective, cname) else 1.0
    event('infeasible' if not any(ok) else 'feasible')
    if not any(ok):
        with pytest.raises(ValueError, match=f'no threshold satisfies {cname} {op}'):
            tune_threshold(s, y, objective, beta=beta, constraint=(cname, op, bound))
        return
    r = tune_threshold(s, y, objective, beta=beta, constraint=(cname, op, bound))
    best, t_best = brute_best(vals, ts, ok)
    assert r.score == pytest.approx(best, abs=1e-9)
    np.testing.assert_array_equal(s >= r.threshold, s >= t_best)
    assert r.curve.feasible.tolist() == ok and r.curve[cname].to_numpy() == pytest.approx(cvals, abs=1e-9)


def kappa(y_true, y_pred): return skm.cohen_kappa_score(y_true, y_pred)


# (e) a callable metric: brute force over its candidate set (and over all thresholds when they are few)
@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=30), st.lists(st.booleans(), min_size=30, max_size=30),
       st.integers(1, 8))
def test_callable_metric_brute_force(scores, labels, max_candidates):
    s, y = np.array(scores) / 30, np.array(labels[:len(scores)], int)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        event(f'subsampled: {len(set(s.tolist())) > max_candidates}')
        if all(np.isnan(kappa(y, s >= t)) for t in all_thresholds(s)):  # e.g. one class and one distinct score
            with pytest.raises(ValueError, match='NaN at every candidate'): tune_threshold(s, y, kappa, max_candidates=max_candidates)
            return
        r = tune_threshold(s, y, kappa, max_candidates=max_candidates)
        ts = r.curve.threshold.to_numpy()
        assert r.objective == 'kappa'
        distinct = sorted(set(s.tolist()), reverse=True)
        assert len(ts) <= min(max_candidates, len(distinct)) + 2
        assert ts[0] > s.max() and ts[-1] == s.min()  # both end points: nothing and everything positive
        parts = {tuple(s >= t) for t in ts}
        assert parts <= {tuple(s >= t) for t in all_thresholds(s)} and len(parts) == len(ts)  # real, distinct partitions
        vals = [kappa(y, s >= t) for t in ts]
        best, t_best = brute_best(vals, ts)
        assert r.score == pytest.approx(best, abs=1e-12)
        np.testing.assert_array_equal(s >= r.threshold, s >= t_best)
        assert r.curve.objective.to_numpy() == pytest.approx(vals, abs=1e-12, nan_ok=True)
        if len(distinct) <= max_candidates:  # every distinct score is a candidate: exact
            all_best, _ = brute_best([kappa(y, s >= t) for t in all_thresholds(s)], all_thresholds(s))
            assert r.score == pytest.approx(all_best, abs=1e-12)


def test_callable_candidates_follow_quantiles():
    s = np.r_[np.linspace(0, .1, 900), np.linspace(.1, 1, 100)[1:]]  # 90 % of the scores below 0.1
    y = (np.arange(len(s)) % 3 == 0).astype(int)
    ts = tune_threshold(s, y, kappa, max_candidates=20).curve.threshold.to_numpy()
    assert len(ts) <= 22 and (ts[1:-1] < .1).mean() > .7  # candidates are dense where the scores are


# (c) against sklearn's TunedThresholdClassifierCV with a prefit estimator
def _prefit(estimator):
    """A prefit estimator for TunedThresholdClassifierCV: FrozenEstimator where this sklearn has it (>= 1.6)."""
    try:
        from sklearn.frozen import FrozenEstimator
        return FrozenEstimator(estimator)
    except ImportError:
        return estimator


def test_against_sklearn_tuned_threshold_classifier():
    X, y = make_classification(n_samples=4000, n_features=20, n_informative=5, weights=[0.8], flip_y=0.05,
                               random_state=0)
    X_fit, X_rest, y_fit, y_rest = train_test_split(X, y, train_size=0.4, random_state=0, stratify=y)
    X_tune, X_test, y_tune, y_test = train_test_split(X_rest, y_rest, train_size=0.5, random_state=0, stratify=y_rest)
    lr = LogisticRegression(max_iter=1000).fit(X_fit, y_fit)
    sk = TunedThresholdClassifierCV(_prefit(lr), scoring='f1', cv='prefit', refit=False).fit(X_tune, y_tune)
    ours = tune_threshold(lr.predict_proba(X_tune)[:, 1], y_tune, 'f1')

    def f1_ours(X_, y_): return skm.f1_score(y_, lr.predict_proba(X_)[:, 1] >= ours.threshold)
    def f1_sk(X_, y_): return skm.f1_score(y_, sk.predict(X_))
    print(f"\nF1 tuning data: dnn_cool {f1_ours(X_tune, y_tune):.4f} (threshold {ours.threshold:.4f}), "
          f"sklearn {f1_sk(X_tune, y_tune):.4f} (threshold {sk.best_threshold_:.4f})")
    print(f"F1 held out:    dnn_cool {f1_ours(X_test, y_test):.4f}, sklearn {f1_sk(X_test, y_test):.4f}")
    assert f1_ours(X_tune, y_tune) == pytest.approx(ours.score, abs=1e-12)
    assert f1_ours(X_tune, y_tune) >= f1_sk(X_tune, y_tune)  # exact sweep vs sklearn's 100-point grid
    assert f1_ours(X_test, y_test) >= f1_sk(X_test, y_test) - 0.02


def test_torch_float32_and_mask():
    torch = pytest.importorskip('torch')
    g = np.random.default_rng(1)
    s = g.random(200).astype(np.float32)
    y, m = g.random(200) < s, g.random(200) < .7
    s_nan = np.where(m, s, np.nan).astype(np.float32)
    r = tune_threshold(torch.from_numpy(s_nan), torch.from_numpy(y), 'balanced_accuracy', mask=torch.from_numpy(m))
    ts = all_thresholds(s[m])
    best, t_best = brute_best([sk_metric('balanced_accuracy', y[m], s[m] >= t) for t in ts], ts)
    assert r.score == pytest.approx(best, abs=1e-9)
    np.testing.assert_array_equal(s[m] >= r.threshold, s[m] >= t_best)  # float32 comparison, as a decoder does
    np.testing.assert_array_equal((torch.from_numpy(s[m]) >= r.threshold).numpy(), s[m] >= t_best)


def test_multilabel_and_json_round_trip(tmp_path):
    g = np.random.default_rng(2)
    s, y = g.random((300, 4)), g.random((300, 4)) < .3
    y[:, 3] = False  # a label with no positives: nothing positive
    rs = tune_multilabel(s, y, objective='mcc', label_names=['a', 'b', 'c', 'd'])
    for j, r in enumerate(rs):
        ts = all_thresholds(s[:, j])
        best, _ = brute_best([sk_metric('mcc', y[:, j], s[:, j] >= t) for t in ts], ts)
        assert r.label == 'abcd'[j] and r.score == pytest.approx(best, abs=1e-9)
    assert not (s[:, 3] >= rs[3].threshold).any()
    th = {'camera_blocked': 0.1 + 0.2, 'tags': [r.threshold for r in rs]}
    path = save_thresholds(tmp_path / 'thresholds.json', th)
    assert load_thresholds(path) == th
    doc = json.loads(path.read_text())
    assert doc['format'] == 'dnn_cool.thresholds' and doc['version'] == 1
    assert b'pickle' not in path.read_bytes() and path.read_bytes()[:1] == b'{'


def test_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r'y_true has shape \(4,\) but scores have shape \(3,\)'):
        tune_threshold(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match='NaN/inf'):
        tune_threshold(np.array([.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match='binary'):
        tune_threshold(np.array([.1, .2]), np.array([0, 2]))
    with pytest.raises(ValueError, match='empty'):
        tune_threshold(np.array([]), np.array([]))
    assert set(NAMES) == set(COUNT_OBJECTIVES)
