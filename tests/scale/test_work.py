"""Numbered batches over image lists and arrays (deploy_res.scale.work) and the listing they rest on (data.list_images)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scale_helpers import photo_folder

from deploy_res.core.errors import DeployResError
from deploy_res.data.images import list_images
from deploy_res.data.inputs import load_inputs
from deploy_res.models import Preprocessing
from deploy_res.scale.work import load_batch, plan_batches

PRE = Preprocessing(input_size=(3, 32, 32))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("work") / "data", 11, classes=3, size=40)


def test_batches_decode_to_what_the_loaders_load(labelled):
    images = list_images(labelled)
    assert images.class_names == ["class_0", "class_1", "class_2"]
    batches = plan_batches(4, images)
    assert [len(b) for b in batches] == [4, 4, 3] and [b.index for b in batches] == [0, 1, 2]
    loaded = [load_batch(b, PRE) for b in batches]
    whole = load_inputs(labelled, PRE, labelled=True)
    np.testing.assert_array_equal(np.concatenate([arrays for arrays, *_ in loaded]), whole.arrays)
    assert np.concatenate([labels for _, labels, *_ in loaded]).tolist() == whole.labels.tolist()
    assert sum((names for *_, names, _ in loaded), []) == whole.names
    assert [len(b) for b in plan_batches(4, images, limit=6)] == [4, 2]


def test_glob_names_are_relative_to_its_folder(labelled):
    listed = list_images(f"{labelled}/**/*.jpg")
    assert listed.labels is None and len(listed) == 11
    assert all(name.startswith("class_") for name in listed.names)
    assert list_images(f"{labelled}/class_1/*.jpg").names == [p.name for p in sorted((labelled / "class_1").iterdir())]


def test_parquet_list_paths_relative_to_the_file(labelled, tmp_path):
    listing = labelled / "list.parquet"
    pq.write_table(pa.table({"path": ["class_0/crop_00000.jpg"], "label": [4]}), listing)
    try:
        images = list_images(listing)
        assert images.files == [labelled / "class_0" / "crop_00000.jpg"] and images.labels == [4]
    finally:
        listing.unlink()
    pq.write_table(pa.table({"path": ["a.jpg"], "label": [-1]}), tmp_path / "bad.parquet")
    with pytest.raises(DeployResError, match="non-negative integers"):
        list_images(tmp_path / "bad.parquet")


def test_arrays_batches_and_bad_files(tmp_path):
    arrays = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    batches = plan_batches(2, arrays=arrays, labels=[0, 1, 0, 1, 0])
    got, labels, names, skipped = load_batch(batches[2], None)
    assert got.tolist() == [[8.0, 9.0]] and labels.tolist() == [0] and names == ["input[4]"] and skipped == []
    (tmp_path / "a.jpg").write_bytes(b"x")
    work = plan_batches(8, list_images(tmp_path))[0]
    with pytest.raises(DeployResError, match="a.jpg"):
        load_batch(work, PRE)
    assert load_batch(work, PRE, skip_bad=True) == (None, None, [], ["a.jpg"])
