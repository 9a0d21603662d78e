"""Heavier checks of `dnn_cool.synthetic`: speed, scene frequencies, and label/pixel agreement on many samples."""
import time

import numpy as np
import pandas as pd
from hypothesis import given, settings, strategies as st

from dnn_cool.synthetic import (BOOL_TASKS, BOX_COLUMNS, DOOR_CLOSED_COLOR, DOOR_OPEN_COLOR, FACE_CHANNEL_LEVELS,
                                LOCK_COLOR, NOISE_PIXELS, SCENE_PROBABILITIES, SHIRT_COLORS, WALL_COLOR,
                                make_synthetic)


def test_ten_thousand_in_seconds():
    make_synthetic(100)  # warm up imports and caches
    start = time.perf_counter()
    data = make_synthetic(10_000, seed=123)
    elapsed = time.perf_counter() - start
    assert data.images.shape == (10_000, 3, 64, 64)
    assert elapsed < 5, f'make_synthetic(10_000) took {elapsed:.2f} s'


def _scenes(labels: pd.DataFrame) -> np.ndarray:
    "Scene index per row (0 blocked, 1 closed, 2 open empty, 3 person), read from complete labels."
    blocked = labels['camera_blocked'].to_numpy(dtype=bool)
    door_open = labels['door_open'].fillna(False).to_numpy(dtype=bool)
    person = labels['person_present'].fillna(False).to_numpy(dtype=bool)
    return np.select([blocked, ~door_open, ~person], [0, 1, 2], 3)


def test_scene_frequencies():
    labels = make_synthetic(20_000, seed=5, missing_fraction=0, noise_pixels=0).labels
    freq = np.bincount(_scenes(labels), minlength=4) / len(labels)
    np.testing.assert_allclose(freq, SCENE_PROBABILITIES, atol=0.015)
    locked = labels['door_locked'].dropna().to_numpy(dtype=bool)
    assert abs(locked.mean() - 0.5) < 0.03
    shirts = np.bincount(labels['shirt_type'].dropna().to_numpy(dtype=int), minlength=7) / labels['shirt_type'].notna().sum()
    np.testing.assert_allclose(shirts, 1 / 7, atol=0.02)
    faces = np.array(labels['facial_characteristics'].dropna().tolist())  # (n_person, 3)
    np.testing.assert_allclose(faces.mean(axis=0), 0.5, atol=0.03)


def _reference_image(row: pd.Series, door_box, lock_box) -> np.ndarray:
    "Brute-force per-pixel rendering of the person/door parts of a clean image, for comparison."
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    if row.camera_blocked: return img
    img[:] = WALL_COLOR
    x1, y1, w, h = door_box
    for r in range(y1, y1 + h):
        for c in range(x1, x1 + w):
            img[r, c] = DOOR_OPEN_COLOR if row.door_open else DOOR_CLOSED_COLOR
    if lock_box is not None:
        x1, y1, w, h = lock_box
        img[y1:y1 + h, x1:x1 + w] = LOCK_COLOR
    if row.person_present is True:
        cx, cy, rad = row.face_x1 + row.face_w / 2, row.face_y1 + row.face_h / 2, row.face_w / 2
        face = [FACE_CHANNEL_LEVELS[int(b)] for b in row.facial_characteristics]
        for r in range(64):
            for c in range(64):
                if (c + .5 - cx) ** 2 + (r + .5 - cy) ** 2 <= rad ** 2: img[r, c] = face
        for r in range(int(row.body_y1), int(row.body_y1 + row.body_h)):
            for c in range(int(row.body_x1), int(row.body_x1 + row.body_w)):
                img[r, c] = SHIRT_COLORS[row.shirt_type]
    return img


def _box_of(img: np.ndarray, colors) -> tuple | None:
    mask = np.zeros(img.shape[:2], dtype=bool)
    for color in colors: mask |= (img == np.array(color, dtype=np.uint8)).all(axis=-1)
    rows, cols = np.nonzero(mask)
    if len(rows) == 0: return None
    return (cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min())


def test_images_match_brute_force_rendering_of_labels():
    data = make_synthetic(300, seed=11, missing_fraction=0, noise_pixels=0)
    for chw, (_, row) in zip(data.images, data.labels.iterrows()):
        img = chw.transpose(1, 2, 0)  # (H, W, 3)
        # the door and lock positions are not labels: read them off the image, then check everything else
        door = _box_of(img, [DOOR_OPEN_COLOR, DOOR_CLOSED_COLOR])
        if row.person_present is True:  # the person hides part of the doorway but never its outline
            door = _box_of(img, [DOOR_OPEN_COLOR] + list(SHIRT_COLORS) + [
                tuple(FACE_CHANNEL_LEVELS[int(b)] for b in row.facial_characteristics)])
        lock = _box_of(img, [LOCK_COLOR]) if row.door_locked is True else None
        if not row.camera_blocked: assert door[2:] == (32, 50)
        if lock is not None: assert lock[2:] == (6, 6)
        np.testing.assert_array_equal(img, _reference_image(row, door, lock))


def test_noise_is_exactly_forty_distinct_pixels_on_blocked_images():
    data = make_synthetic(2000, seed=3, missing_fraction=0)
    blocked = data.labels['camera_blocked'].to_numpy(dtype=bool)
    lit = data.images[blocked].any(axis=1).sum(axis=(1, 2))  # (n_blocked,) non-black pixels
    assert lit.max() <= NOISE_PIXELS
    assert lit.mean() > NOISE_PIXELS - 0.1  # only an all-black noise colour (p = 2**-24) hides a pixel


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 60), seed=st.integers(0, 2**32 - 1), missing_fraction=st.floats(0, 1))
def test_missing_labels_only_add_to_the_precondition_structure(n, seed, missing_fraction):
    full = make_synthetic(n, seed=seed, missing_fraction=0, noise_pixels=0)
    part = make_synthetic(n, seed=seed, missing_fraction=missing_fraction, noise_pixels=0)
    np.testing.assert_array_equal(full.images, part.images)
    for col in full.labels.columns:
        was, now = full.labels[col].isna().to_numpy(), part.labels[col].isna().to_numpy()
        assert not (was & ~now).any(), col
        assert full.labels[col][~now].tolist() == part.labels[col][~now].tolist(), col
    assert [str(part.labels[c].dtype) for c in BOOL_TASKS] == ['boolean'] * 4
    assert all(part.labels[c].dtype == np.float64 for c in BOX_COLUMNS)
    assert str(part.labels['shirt_type'].dtype) == 'Int64'
    if missing_fraction == 1: assert part.labels.isna().all().all()
