import zipfile

import numpy as np
import pytest
from PIL import Image

from detector.data import ImageSet, label_from_path, load_image_set
from train.splits import drop_duplicates, read_duplicate_hashes, train_val_split


def test_label_from_path_any_depth():
    assert label_from_path("a/b/train/REAL/x.jpg") == 0
    assert label_from_path("test/FAKE/0 (10).jpg") == 1
    assert label_from_path("fake/real/x.png") == 0  # innermost folder wins
    assert label_from_path("cats/x.png") == -1


def test_folder_and_zip_give_the_same_images(dataset_dir, dataset_zip):
    a = load_image_set(dataset_dir, progress=False)
    b = load_image_set(dataset_zip, progress=False)
    assert len(a) == len(b) == 48
    assert a.images.shape == (48, 32, 32, 3) and a.images.dtype == np.uint8
    assert a.counts() == {"real": 24, "fake": 24}
    assert sorted(a.hashes) == sorted(b.hashes)
    assert all(":" in p and p.split(":", 1)[1].startswith("train/") for p in b.paths)


def test_unlabelled_files_are_skipped_in_labelled_mode_and_bad_files_reported(dataset_dir):
    (dataset_dir / "train" / "REAL" / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(dataset_dir / "unlabelled.png")
    s = load_image_set(dataset_dir, progress=False)
    assert len(s) == 48
    assert [p.endswith("broken.jpg") for p, _ in s.errors] == [True]
    u = load_image_set(dataset_dir, labelled=False, progress=False)
    assert len(u) == 49 and (u.labels == -1).sum() == 1


def test_empty_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="REAL/ and FAKE/"):
        load_image_set(tmp_path, progress=False)


def _toy_set(hashes, labels):
    n = len(hashes)
    return ImageSet(np.zeros((n, 32, 32, 3), np.uint8), np.asarray(labels), [f"f{i}" for i in range(n)], list(hashes))


def test_split_is_seeded_stratified_and_keeps_duplicates_together():
    hashes = [f"h{i}" for i in range(400)] + ["dup"] * 6  # six byte-identical files
    labels = [0] * 200 + [1] * 200 + [1] * 6
    s = _toy_set(hashes, labels)
    tr, va = train_val_split(s, 0.1, seed=3)
    tr2, va2 = train_val_split(s, 0.1, seed=3)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(s)
    dup_side = {i in set(va) for i in range(400, 406)}
    assert len(dup_side) == 1
    assert abs((s.labels[va] == 1).mean() - 0.5) < 0.06
    assert not np.array_equal(train_val_split(s, 0.1, seed=4)[1], va)


def test_drop_duplicates_by_hash_and_tsv(tmp_path):
    test = _toy_set(["a", "b", "c"], [1, 1, 0])
    kept, removed = drop_duplicates(test, _toy_set(["b", "x"], [1, 0]))
    assert removed == 1 and kept.hashes == ["a", "c"]
    tsv = tmp_path / "d.tsv"
    tsv.write_text("# comment\nkind\tsha256\tp1\tp2\ntrain-test\tc\tx\ty\ntrain-only\ta\tx\ty\n")
    assert read_duplicate_hashes(tsv) == {"c"}
    assert drop_duplicates(test, read_duplicate_hashes(tsv))[1] == 1


def test_zip_entries_that_are_encrypted_or_not_images_are_handled(tmp_path, dataset_dir):
    z = tmp_path / "mixed.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(next((dataset_dir / "train" / "FAKE").glob("*.png")), "FAKE/ok.png")
        zf.writestr("FAKE/readme.txt", "hello")
        zf.writestr("REAL/bad.png", b"\x89PNG\r\n\x1a\nbroken")
    s = load_image_set(z, progress=False)
    assert len(s) == 1 and s.labels.tolist() == [1]
    assert len(s.errors) == 1 and s.errors[0][0].endswith("REAL/bad.png")
