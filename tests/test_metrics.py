"Streaming task metrics against sklearn on the masked-in samples, fed in uneven batches (see nbs/05_metrics.ipynb)."
import math
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn import metrics as skm

from dnn_cool.metrics import (BinaryMetrics, ClassificationMetrics, MultilabelMetrics, RegressionMetrics,
                              TokenClassificationMetrics, TaskMetric)

pytestmark = pytest.mark.filterwarnings("ignore:'k' .* will result in a perfect score")  # sklearn on k >= n_classes
SETTINGS = settings(max_examples=60, deadline=None)
PRF = [('f1_score', skm.f1_score), ('precision', skm.precision_score), ('recall', skm.recall_score)]


def close(a, b, tol=1e-9):
    assert math.isclose(a, b, rel_tol=tol, abs_tol=tol), (a, b)


def all_nan(res: dict) -> bool:
    return all(math.isnan(v) for v in res.values())


@st.composite
def batching(draw, n):
    "Uneven batch slices over `range(n)`, with an extra all-masked-out batch somewhere in the sequence."
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    bounds = [0, *cuts, n]
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    slices.insert(draw(st.integers(0, len(slices))), None)  # None: the batch with no valid sample
    return slices


def feed(metric, slices, arrays, garbage):
    "Update `metric` batch by batch; `arrays` = (activated, decoded, target, mask), `garbage` = one masked-out batch."
    for s in slices:
        batch = garbage if s is None else [None if a is None else torch.as_tensor(a[s]) for a in arrays]
        metric.update(*batch)


def ranking(scores):
    "Class ids by descending score with sklearn's tie order (stable ascending sort, reversed)."
    return np.ascontiguousarray(np.argsort(scores, axis=1, kind='mergesort')[:, ::-1])


# ---------------------------------------------------------------- binary
@SETTINGS
@given(st.integers(0, 40).flatmap(lambda n: st.tuples(
    st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.sampled_from([np.nan, 0.0, 1.0])),
             min_size=n, max_size=n),
    batching(n))))
def test_binary_matches_sklearn(data):
    rows, slices = data
    y = np.array([r[0] for r in rows], dtype=bool)
    p = np.array([r[1] for r in rows], dtype=bool)
    m = np.array([r[2] for r in rows], dtype=bool)
    target = np.where(m, y.astype(float), [r[3] for r in rows])  # masked out: NaN or a real label
    garbage = [torch.rand(3), torch.tensor([True, True, False]), torch.tensor([1.0, np.nan, 0.0]),
               torch.zeros(3, dtype=torch.bool)]
    metric = BinaryMetrics()
    feed(metric, slices, (np.random.rand(len(rows)), p, target, m), garbage)
    res = metric.compute()
    assert metric.num_samples == m.sum()
    assert list(res) == ['accuracy', 'f1_score', 'precision', 'recall']
    if not m.any():
        assert all_nan(res)
        return
    close(res['accuracy'], skm.accuracy_score(y[m], p[m]))
    for name, score in PRF: close(res[name], score(y[m], p[m], zero_division=0))
    np.testing.assert_array_equal(metric.confusion_matrix(), skm.confusion_matrix(y[m], p[m], labels=[0, 1]))


# ---------------------------------------------------------------- classification
@SETTINGS
@given(st.integers(2, 7).flatmap(lambda C: st.integers(0, 40).flatmap(lambda n: st.tuples(
    st.just(C),
    st.lists(st.tuples(st.integers(0, C - 1), st.booleans(), st.sampled_from([-1, -100, 0, C - 1, C + 5])),
             min_size=n, max_size=n),
    batching(n), st.integers(0, 2**32 - 1), st.booleans()))))
def test_classification_matches_sklearn(data):
    C, rows, slices, seed, ties = data
    rng = np.random.default_rng(seed)
    n = len(rows)
    y = np.array([r[0] for r in rows], dtype=np.int64)
    m = np.array([r[1] for r in rows], dtype=bool)
    # masked out: missing ids, out-of-range ids or real ids
    target = np.where(m, y, np.array([r[2] for r in rows], dtype=np.int64))
    activated = rng.integers(0, 3, (n, C)).astype(float) if ties else rng.dirichlet(np.ones(C), size=n)
    decoded = ranking(activated)
    g_act = torch.rand(2, C)
    garbage = [g_act, g_act.argsort(1, descending=True), torch.tensor([-1, 10**6]), torch.zeros(2, dtype=torch.bool)]
    names = [f'class_{i}' for i in range(C)]
    metric = ClassificationMetrics(C, class_names=names, per_class=True)
    feed(metric, slices, (activated, decoded, target, m), garbage)
    res = metric.compute()
    ks = [k for k in (1, 3, 5) if k <= C]
    assert list(res)[:len(ks) + 3] == [f'accuracy_{k}' for k in ks] + ['f1_score', 'precision', 'recall']
    assert metric.num_samples == m.sum()
    if not m.any():
        assert all_nan(res)
        return
    yt, yp = y[m], decoded[m, 0]
    close(res['accuracy_1'], skm.accuracy_score(yt, yp))
    for k in ks[1:]: close(res[f'accuracy_{k}'], skm.top_k_accuracy_score(yt, activated[m], k=k, labels=range(C)))
    for name, score in PRF:
        close(res[name], score(yt, yp, average='macro', zero_division=0))
        per_class = score(yt, yp, average=None, labels=range(C), zero_division=0)
        for c, v in zip(names, per_class): close(res[f'{name}/{c}'], v)
    np.testing.assert_array_equal(metric.confusion_matrix(), skm.confusion_matrix(yt, yp, labels=range(C)))


def test_classification_top_k_from_activated_when_decoded_is_truncated():
    rng = np.random.default_rng(0)
    activated = rng.random((50, 8))
    target = rng.integers(0, 8, 50)
    full, truncated = ClassificationMetrics(8), ClassificationMetrics(8)
    full.update(torch.tensor(activated), torch.tensor(ranking(activated)), torch.tensor(target), None)
    truncated.update(torch.tensor(activated), torch.tensor(ranking(activated)[:, :1]), torch.tensor(target), None)
    assert full.compute() == truncated.compute()
    close(full.compute()['accuracy_5'], skm.top_k_accuracy_score(target, activated, k=5, labels=range(8)))


def test_negative_class_ids_count_as_missing_even_where_masked_in():
    activated = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])
    metric = ClassificationMetrics(3)
    metric.update(activated, activated.argsort(1, descending=True), torch.tensor([0, -1, -100]), None)
    assert metric.num_samples == 1
    assert metric.compute()['accuracy_1'] == 1.0
    np.testing.assert_array_equal(metric.confusion_matrix(), np.diag([1, 0, 0]))


# ---------------------------------------------------------------- multilabel
@SETTINGS
@given(st.integers(2, 5).flatmap(lambda L: st.integers(0, 30).flatmap(lambda n: st.tuples(
    st.just(L), st.integers(0, 2**32 - 1), batching(n), st.just(n)))))
def test_multilabel_matches_sklearn(data):
    L, seed, slices, n = data
    rng = np.random.default_rng(seed)
    y = rng.random((n, L)) > 0.5
    p = rng.random((n, L)) > 0.5
    m = rng.random(n) > 0.3
    target = y.astype(float)
    target[~m & (rng.random(n) > 0.5)] = np.nan  # masked out: missing, or labelled under a false precondition
    garbage = [torch.rand(2, L), torch.ones(2, L, dtype=torch.bool), torch.full((2, L), np.nan),
               torch.zeros(2, dtype=torch.bool)]
    names = [f'label_{i}' for i in range(L)]
    metric = MultilabelMetrics(L, label_names=names, per_label=True)
    feed(metric, slices, (None, p, target, m), garbage)
    res = metric.compute()
    assert metric.num_samples == m.sum()
    if not m.any():
        assert all_nan(res)
        return
    yt, yp = y[m].astype(int), p[m].astype(int)
    close(res['subset_accuracy'], skm.accuracy_score(yt, yp))
    for name, score in PRF:
        close(res[name], score(yt, yp, average='macro', zero_division=0))
        for c, v in zip(names, score(yt, yp, average=None, zero_division=0)): close(res[f'{name}/{c}'], v)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_multilabel_partially_known_samples(seed):
    "A NaN inside a masked-in sample leaves that label's counts and the subset accuracy; each label is its own sklearn."
    rng = np.random.default_rng(seed)
    n, L = 25, 3
    y, p = rng.random((n, L)) > 0.5, rng.random((n, L)) > 0.5
    target = np.where(rng.random((n, L)) > 0.2, y.astype(float), np.nan)
    metric = MultilabelMetrics(L)
    metric.update(None, torch.tensor(p), torch.tensor(target), None)
    res = metric.compute()
    known = ~np.isnan(target)
    for name, score in PRF:
        per_label = [score(y[known[:, l], l], p[known[:, l], l], zero_division=0) if known[:, l].any() else 0.0
                     for l in range(L)]
        close(res[name], float(np.mean(per_label)))
    complete = known.all(1)
    if complete.any(): close(res['subset_accuracy'], skm.accuracy_score(y[complete], p[complete]))
    else: assert math.isnan(res['subset_accuracy'])
    assert metric.num_samples == known.any(1).sum()


# ---------------------------------------------------------------- regression
@SETTINGS
@given(st.integers(0, 40).flatmap(lambda n: st.tuples(st.integers(0, 2**32 - 1), batching(n), st.just(n))),
       st.floats(-100, 100), st.floats(0.01, 1000))
def test_regression_matches_sklearn(data, offset, scale):
    seed, slices, n = data
    rng = np.random.default_rng(seed)
    y = offset + scale * rng.normal(size=n)
    yhat = y + scale * rng.normal(0, 0.3, n)
    m = rng.random(n) > 0.3
    target = np.where(m, y, rng.choice([np.nan, 1e9, -7.0], size=n))
    decoded = np.where(m | (rng.random(n) > 0.5), yhat, np.nan)  # a head may output anything where masked out
    low, high = offset - 4 * scale, offset + 4 * scale
    garbage = [None, torch.tensor([np.nan, 3.0]), torch.tensor([np.nan, 1e300]), torch.zeros(2, dtype=torch.bool)]
    metric = RegressionMetrics(low, high)
    feed(metric, slices, (None, decoded.astype(np.float32), target, m), garbage)
    res = metric.compute()
    assert metric.num_samples == m.sum()
    if not m.any():
        assert all_nan(res)
        return
    yt, yp = y[m], decoded[m].astype(np.float32).astype(np.float64)  # the model's float32 output, exactly
    close(res['mean_absolute_error'], skm.mean_absolute_error(yt, yp), 1e-7)
    close(res['root_mean_squared_error'], skm.root_mean_squared_error(yt, yp), 1e-7)
    close(res['mean_absolute_error_normalised'], skm.mean_absolute_error(yt, yp) / (high - low), 1e-7)
    if m.sum() < 2: assert math.isnan(res['r2_score'])
    else: close(res['r2_score'], skm.r2_score(yt, yp), 1e-6)


# ---------------------------------------------------------------- masked language modelling
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(2, 9), st.integers(0, 2**32 - 1))
def test_token_metrics_match_sklearn(bs, T, V, seed):
    rng = np.random.default_rng(seed)
    activated = rng.random((bs, T, V))
    target = rng.integers(0, V, (bs, T))
    target[rng.random((bs, T)) > 0.5] = -100
    m = rng.random(bs) > 0.3
    target[~m & (rng.random(bs) > 0.5)] = -7  # garbage ids in masked-out samples
    metric = TokenClassificationMetrics(V)
    cut = rng.integers(0, bs + 1)
    for s in (slice(0, cut), slice(cut, None)):
        metric.update(torch.tensor(activated[s]), None, torch.tensor(target[s]), torch.tensor(m[s]))
    scored = m[:, None] & (target >= 0)
    res = metric.compute()
    assert (metric.num_samples, metric.num_tokens) == (scored.any(1).sum(), scored.sum())
    if not scored.any():
        assert all_nan(res)
        return
    yt, scores = target[scored], activated[scored]
    for k in metric.top_k:
        expected = skm.accuracy_score(yt, scores.argmax(1)) if k == 1 else \
            skm.top_k_accuracy_score(yt, scores, k=k, labels=range(V)) if V > 2 else 1.0
        close(res[f'accuracy_{k}'], expected)


# ---------------------------------------------------------------- every metric
def make_all():
    return [BinaryMetrics(), ClassificationMetrics(6, per_class=True), MultilabelMetrics(3, per_label=True),
            RegressionMetrics(-1, 1), TokenClassificationMetrics(7)]


def random_batch(metric: TaskMetric, bs: int, device='cpu', seed=0, mask=None):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(shape, generator=g)
    mask = rand(bs) > 0.3 if mask is None else mask
    if isinstance(metric, BinaryMetrics):
        target = torch.where(mask, (rand(bs) > 0.5).float(), float('nan'))
        batch = rand(bs), rand(bs) > 0.5, target, mask
    elif isinstance(metric, ClassificationMetrics):
        activated = rand(bs, metric.num_classes).softmax(-1)
        target = torch.where(mask, torch.randint(0, metric.num_classes, (bs,), generator=g), -1)
        batch = activated, activated.argsort(-1, descending=True), target, mask
    elif isinstance(metric, MultilabelMetrics):
        L = metric.num_labels
        batch = rand(bs, L), rand(bs, L) > 0.5, (rand(bs, L) > 0.5).float(), mask
    elif isinstance(metric, RegressionMetrics):
        batch = None, rand(bs) * 2 - 1, torch.where(mask, rand(bs) * 2 - 1, float('nan')), mask
    else:
        target = torch.randint(-1, metric.num_classes, (bs, 5), generator=g)
        batch = rand(bs, 5, metric.num_classes), None, target, mask
    return [None if x is None else x.to(device) for x in batch]


@contextmanager
def no_host_sync():
    "Every Tensor-to-Python conversion raises inside the block."
    def forbidden(name):
        def raise_(*args, **kwargs): raise AssertionError(f"host sync: Tensor.{name} called")
        return raise_
    names = ['item', 'tolist', 'numpy', '__bool__', '__int__', '__float__', '__index__']
    with mock.patch.multiple(torch.Tensor, **{k: forbidden(k) for k in names}): yield


@pytest.mark.parametrize('metric', make_all(), ids=lambda m: type(m).__name__)
def test_update_makes_no_host_sync(metric):
    batches = [random_batch(metric, bs, seed=bs) for bs in (5, 1, 8)]
    empty = random_batch(metric, 4, mask=torch.zeros(4, dtype=torch.bool))
    with no_host_sync():
        for batch in [*batches, empty]: metric.update(*batch)
    with pytest.raises(AssertionError, match='host sync'), no_host_sync(): metric.num_samples
    assert metric.num_samples > 0


@pytest.mark.parametrize('metric', make_all(), ids=lambda m: type(m).__name__)
def test_empty_epoch_is_nan_and_reset_clears(metric):
    metric.update(*random_batch(metric, 6, mask=torch.zeros(6, dtype=torch.bool)))
    assert metric.num_samples == 0 and all_nan(metric.compute())
    metric.update(*random_batch(metric, 6, mask=torch.ones(6, dtype=torch.bool)))
    assert metric.num_samples > 0
    metric.reset()
    assert metric.num_samples == 0 and all_nan(metric.compute())


@pytest.mark.parametrize('index', range(5))
def test_merge_and_all_reduce_are_addition(index, tmp_path):
    whole, left, right = make_all()[index], make_all()[index], make_all()[index]
    for seed, part in enumerate([left, left, right]):
        batch = random_batch(whole, 7 + seed, seed=seed)
        whole.update(*batch)
        part.update(*batch)
    left.merge(right)
    assert left.compute() == pytest.approx(whole.compute(), nan_ok=True)
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        before = {k: v.clone() for k, v in whole.state.items()}
        whole.all_reduce()
        for k, v in whole.state.items(): assert torch.equal(v, before[k])
    finally:
        dist.destroy_process_group()


def test_errors_name_the_task():
    with pytest.raises(ValueError, match="ClassificationMetrics of task 'shirt_type': 3 class_names for 4 classes"):
        ClassificationMetrics(4, class_names=['a', 'b', 'c'], name='shirt_type')
    with pytest.raises(ValueError, match=r"MultilabelMetrics of task 'face': decoded \(2, 3\) and target \(2, 2\)"):
        MultilabelMetrics(2, name='face').update(None, torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 2), None)
    with pytest.raises(ValueError, match="give both low < high"):
        RegressionMetrics(low=1.0, name='x1')
    with pytest.raises(ValueError, match=r"TokenClassificationMetrics of task 'mlm': activated \(2, 3, 4\)"):
        TokenClassificationMetrics(5, name='mlm').update(torch.rand(2, 3, 4), None, torch.zeros(2, 3).long(), None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('index', range(5))
def test_cuda_update_never_synchronises_and_matches_cpu(index):
    cpu, gpu = make_all()[index], make_all()[index]
    batches = [random_batch(cpu, bs, seed=bs) for bs in (16, 3, 64)]
    batches.append(random_batch(cpu, 8, mask=torch.zeros(8, dtype=torch.bool)))
    gpu_batches = [[None if x is None else x.cuda() for x in b] for b in batches]
    gpu.update(*gpu_batches[0])  # the first update moves the statistics to the device (a copy, allowed once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for batch in gpu_batches[1:]: gpu.update(*batch)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    for batch in batches: cpu.update(*batch)
    assert all(v.device.type == 'cuda' for v in gpu.state.values())
    assert gpu.compute() == pytest.approx(cpu.compute(), nan_ok=True)
    assert gpu.num_samples == cpu.num_samples
