"""Datasets for the examples: Fashion-MNIST from its IDX files, and scikit-learn's digits offline.

Every loader returns ``(train, test)``, each a ``TensorDataset`` of float32 images of shape
(N, 1, 28, 28) in [0, 1] and int64 labels of shape (N,).
"""
import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

DATASETS = ("auto", "fashion-mnist", "digits")
DEFAULT_ROOT = Path.home() / ".cache" / "convtri"  # load_dataset's root when none is given
IMAGE_SIZE = 28  # Fashion-MNIST's side; digits are resized to it

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_MD5 = {  # from the dataset's README, of the .gz files
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_SPLITS = (  # (images, labels) per split, names without .gz
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
FASHION_MNIST_FILES = tuple(name for split in FASHION_MNIST_SPLITS for name in split)
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX: 0x08 (unsigned byte), then the number of dims
DOWNLOAD_TIMEOUT_S = 10  # short, so that "auto" falls back quickly without a network
DOWNLOAD_CHUNK = 1 << 16

DIGITS_MAX = 16.0  # scikit-learn's digits count pixels 0..16
CLASS_NAMES = {
    "fashion-mnist": ("t-shirt", "trouser", "pullover", "dress", "coat",
                      "sandal", "shirt", "sneaker", "bag", "ankle boot"),
    "digits": tuple("0123456789"),
}
NUM_CLASSES = 10


class MissingFilesError(FileNotFoundError):
    """Fashion-MNIST's files are not all in ``root`` and were not to be downloaded."""

    def __init__(self, root, missing, reason):
        self.root, self.missing, self.reason = Path(root), list(missing), reason
        super().__init__(_missing_message(self.root, self.missing, reason))


class DownloadError(RuntimeError):
    """Fetching Fashion-MNIST's missing files into ``root`` failed (no network, a bad mirror)."""

    def __init__(self, root, missing, reason):
        self.root, self.missing, self.reason = Path(root), list(missing), reason
        super().__init__(_missing_message(self.root, self.missing, reason))


class CorruptFileError(ValueError):
    """An IDX file that is not what its name says: ``path`` and what is wrong with it."""

    def __init__(self, path, problem):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


# ----------------------------------------------------------------------------- IDX files

def _read_bytes(path):
    """The bytes of ``path``, decompressed when it ends in .gz."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise CorruptFileError(path, f"corrupt gzip stream ({err})") from err


def _read_idx(path, magic):
    """The header sizes and the uint8 payload of the IDX file ``path``, checked against its header."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFileError(path, f"truncated IDX header: {len(data)} bytes, expected {header}")
    found, *sizes = struct.unpack(f">{1 + ndim}I", data[:header])
    if found != magic:
        raise CorruptFileError(path, f"magic number {found}, expected {magic} "
                                     f"({'images' if magic == IMAGES_MAGIC else 'labels'})")
    declared, actual = math.prod(sizes), len(data) - header
    if actual != declared:
        what = "truncated" if actual < declared else "trailing bytes"
        raise CorruptFileError(path, f"{what}: the header declares {' x '.join(map(str, sizes))} bytes of data, "
                                     f"the file holds {actual}")
    return sizes, np.frombuffer(data, dtype=np.uint8, offset=header)


def _load_split(images_path, labels_path):
    """One split's images, scaled to [0, 1], and labels, checked against each other."""
    (n, rows, cols), pixels = _read_idx(images_path, IMAGES_MAGIC)
    (m,), labels = _read_idx(labels_path, LABELS_MAGIC)
    if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
        raise CorruptFileError(images_path, f"images are {rows}x{cols}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    if n != m:
        raise CorruptFileError(labels_path, f"holds {m} labels but {images_path} holds {n} images")
    if m and labels.max() >= NUM_CLASSES:
        raise CorruptFileError(labels_path, f"label {labels.max()} out of range 0..{NUM_CLASSES - 1}")
    images = torch.from_numpy(pixels.copy()).reshape(n, 1, rows, cols).float().div_(255)
    return TensorDataset(images, torch.from_numpy(labels.astype(np.int64)))


# ----------------------------------------------------------------------------- finding and downloading

def _layouts(root):
    """The directories that may hold the files: flat, then torchvision's (also d2l's)."""
    return (root, root / "FashionMNIST" / "raw")


def _find_files(directory):
    """{name: path} of the Fashion-MNIST files in ``directory``, the raw file preferred over the .gz."""
    found = {}
    for name in FASHION_MNIST_FILES:
        for path in (directory / name, directory / f"{name}.gz"):
            if path.is_file():
                found[name] = path
                break
    return found


def _missing_message(root, missing, why):
    """First line: what is missing and why (for "auto"'s fallback line); then where to put the files."""
    names = "all four files" if len(missing) == len(FASHION_MNIST_FILES) else ", ".join(missing)
    return (f"Fashion-MNIST not found in {root} ({why}); missing: {names}\n"
            f"Put the four files {', '.join(f'{name}.gz' for name in FASHION_MNIST_FILES)} "
            f"(gz or uncompressed) from {FASHION_MNIST_URL} in either\n"
            f"  {root}/\n"
            f"  {root / 'FashionMNIST' / 'raw'}/   (torchvision's layout)\n"
            f"or pass as root a directory where torchvision or d2l already downloaded Fashion-MNIST "
            f"(the one that holds FashionMNIST/raw/).")


def _download(name, directory):
    """Fetch ``name`` from the mirror into ``directory``: a temp file, md5-checked, then renamed."""
    from tqdm import tqdm

    url = FASHION_MNIST_URL + name
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        directory.mkdir(parents=True, exist_ok=True)
        total = int(response.headers.get("Content-Length") or 0) or None
        fd, tmp = tempfile.mkstemp(prefix=f"{name}.", suffix=".part", dir=directory)
        try:
            md5 = hashlib.md5()
            with os.fdopen(fd, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=name) as bar:
                while chunk := response.read(DOWNLOAD_CHUNK):
                    f.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
            if md5.hexdigest() != FASHION_MNIST_MD5[name]:
                raise RuntimeError(f"{url}: md5 {md5.hexdigest()} does not match the expected "
                                   f"{FASHION_MNIST_MD5[name]}; the download was deleted. Retry, or put the "
                                   f"file in {directory} yourself")
            os.replace(tmp, directory / name)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _download_missing(root, directory, missing):
    for i, name in enumerate(missing):
        try:
            _download(f"{name}.gz", directory)
        except (OSError, http.client.HTTPException, RuntimeError) as err:  # RuntimeError: an md5 mismatch
            raise DownloadError(root, missing[i:], f"the download failed: {err}") from err


# ----------------------------------------------------------------------------- loaders

def load_fashion_mnist(root, download=False):
    """Fashion-MNIST's (train, test) from ``root/`` or ``root/FashionMNIST/raw/``, gz or raw IDX files.

    Uses the layout that holds the most of the four files. With ``download=True`` the missing
    ones are fetched from the official mirror into it (md5-checked); without a network that
    raises a DownloadError (a RuntimeError), without ``download`` a MissingFilesError (a
    FileNotFoundError), each saying where to put the files. A damaged file raises a
    CorruptFileError (a ValueError) that names it.
    """
    root = Path(root).expanduser()
    directory, found = max(((d, _find_files(d)) for d in _layouts(root)), key=lambda pair: len(pair[1]))
    missing = [name for name in FASHION_MNIST_FILES if name not in found]
    if missing and not download:
        raise MissingFilesError(root, missing, "download=False")
    if missing:
        _download_missing(root, directory, missing)
        found = _find_files(directory)
    return tuple(_load_split(found[images], found[labels]) for images, labels in FASHION_MNIST_SPLITS)


def _stratified_split(labels, test_fraction, seed):
    """(train, test) indices: a seeded shuffle, then round(test_fraction * count) of each class to test."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    in_test = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        of_class = order[labels[order] == c]
        in_test[of_class[:round(test_fraction * len(of_class))]] = True
    return order[~in_test[order]], order[in_test[order]]


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's 1,797 8x8 digits as (train, test), no network needed.

    Pixels 0..16 are scaled to [0, 1] and resized bilinearly to 28x28. The split is a seeded,
    stratified shuffle: each class puts round(test_fraction * its count) examples in test, and
    both splits keep the shuffled order (so their first examples mix the classes).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"load_digits: test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as err:
        raise ImportError("the digits dataset needs scikit-learn: pip install 'convtri[digits]' "
                          "(or pip install scikit-learn)") from err
    digits = sklearn_load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train, test = _stratified_split(labels, test_fraction, seed)
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def load_dataset(name="auto", root=None, download=True, verbose=True):
    """(train, test, name_used) for ``name`` in DATASETS; ``root`` defaults to DEFAULT_ROOT.

    "auto" uses Fashion-MNIST when it is in ``root`` or can be downloaded, and otherwise falls
    back to digits, printing one line that says why (unless not ``verbose``). "fashion-mnist"
    never falls back.
    """
    if name not in DATASETS:
        raise ValueError(f"load_dataset: name must be one of {', '.join(DATASETS)}, got {name!r}")
    if name == "digits":
        return (*load_digits(), "digits")
    root = DEFAULT_ROOT if root is None else root
    if name == "fashion-mnist":
        return (*load_fashion_mnist(root, download), "fashion-mnist")
    try:
        return (*load_fashion_mnist(root, download), "fashion-mnist")
    except (MissingFilesError, DownloadError) as err:
        if verbose:
            print(f"convtri: using scikit-learn's digits instead: {str(err).splitlines()[0]}")
        return (*load_digits(), "digits")


def limit(dataset, n):
    """The first ``n`` examples of a TensorDataset; all of them when ``n`` is None or larger."""
    if n is None:
        return dataset
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"limit: n must be a positive int or None, got {n!r}")
    return TensorDataset(*(t[:n] for t in dataset.tensors))
