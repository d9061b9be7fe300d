"""convtri.lenet.data on small IDX files written here, a fake opener for downloads, and scikit-learn's digits.

No test touches the network: every download goes through a monkeypatched urlopen.
"""
import gzip
import hashlib
import io
import struct
import sys
import urllib.error

import numpy as np
import pytest
import torch

from convtri.lenet import data
from idx_files import idx_bytes, write_files

SPLIT_SIZES = {"train": 5, "t10k": 3}  # examples per split in the synthetic files


def fashion_files(seed=0, side=data.IMAGE_SIZE):
    """{file name: IDX bytes} of a tiny valid Fashion-MNIST, and its (images, labels) per split."""
    rng = np.random.default_rng(seed)
    files, arrays = {}, {}
    for split, n in SPLIT_SIZES.items():
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        files[f"{split}-images-idx3-ubyte"] = idx_bytes(data.IMAGES_MAGIC, images)
        files[f"{split}-labels-idx1-ubyte"] = idx_bytes(data.LABELS_MAGIC, labels)
        arrays[split] = (images, labels)
    return files, arrays


def check_loaded(splits, arrays):
    for dataset, (images, labels) in zip(splits, arrays.values()):
        x, y = dataset.tensors
        assert x.shape == (len(labels), 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (len(labels),) and y.dtype == torch.int64
        torch.testing.assert_close(x, torch.from_numpy(images).float().unsqueeze(1) / 255)
        assert y.tolist() == labels.tolist()


class FakeResponse(io.BytesIO):
    def __init__(self, content):
        super().__init__(content)
        self.headers = {"Content-Length": str(len(content))}


@pytest.fixture
def serve(monkeypatch):
    """Serve {file name: content} (gzip-compressed here) at the mirror's URLs; returns the URLs asked for."""
    asked = []

    def install(files, patch_md5=True):
        served = {data.FASHION_MNIST_URL + f"{name}.gz": gzip.compress(c) for name, c in files.items()}
        if patch_md5:
            for url, content in served.items():
                monkeypatch.setitem(data.FASHION_MNIST_MD5, url.rsplit("/", 1)[1], hashlib.md5(content).hexdigest())

        def urlopen(url, timeout):
            assert timeout == data.DOWNLOAD_TIMEOUT_S
            asked.append(url)
            return FakeResponse(served[url])

        monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)
        return asked

    return install


@pytest.fixture
def offline(monkeypatch):
    """A network that is down: urlopen raises URLError."""
    def urlopen(url, timeout):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)


# ----------------------------------------------------------------------------- reading IDX files

@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [True, False])
def test_load_layouts(tmp_path, layout, gz):
    # both accepted directories, gz and uncompressed: shapes, dtypes, values scaled to [0, 1]
    files, arrays = fashion_files()
    write_files(tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw", files, gz)
    check_loaded(data.load_fashion_mnist(tmp_path), arrays)


def test_layout_with_all_four_files_wins(tmp_path):
    # a flat dir holding one (corrupt) file loses to a torchvision dir holding all four
    files, arrays = fashion_files()
    write_files(tmp_path / "FashionMNIST" / "raw", files, gz=True)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"garbage")
    check_loaded(data.load_fashion_mnist(tmp_path), arrays)


def corrupt(files, name, content):
    return {**files, name: content}


def images_of_side(side):
    return fashion_files(side=side)[0]["train-images-idx3-ubyte"]


CORRUPT_CASES = [  # (file to corrupt, its new content, words the error must say)
    ("train-labels-idx1-ubyte", lambda f: struct.pack(">I", 2051) + f[4:], "magic number 2051"),  # images' magic
    ("t10k-images-idx3-ubyte", lambda f: f[:-100], "truncated"),  # last 100 pixels cut off
    ("t10k-images-idx3-ubyte", lambda f: f[:10], "truncated IDX header"),  # not even a header
    ("train-labels-idx1-ubyte", lambda f: f + b"\0", "trailing bytes"),  # one byte too many
    ("train-labels-idx1-ubyte", lambda f: idx_bytes(data.LABELS_MAGIC, np.zeros(4)), "holds 4 labels"),  # 5 vs 4
    ("train-images-idx3-ubyte", lambda f: images_of_side(20), "20x20"),  # consistent file, wrong image size
    ("t10k-labels-idx1-ubyte", lambda f: idx_bytes(data.LABELS_MAGIC, np.full(3, 10)), "label 10"),  # not 0..9
]


@pytest.mark.parametrize("name, change, words", CORRUPT_CASES)
@pytest.mark.parametrize("gz", [True, False])
def test_corrupt_files(tmp_path, name, change, words, gz):
    # every corruption is a ValueError that names the file and says what is wrong
    files, _ = fashion_files()
    write_files(tmp_path, corrupt(files, name, change(files[name])), gz)
    with pytest.raises(ValueError, match=words) as err:
        data.load_fashion_mnist(tmp_path)
    assert str(tmp_path / (f"{name}.gz" if gz else name)) in str(err.value)
    assert isinstance(err.value, data.CorruptFileError) and err.value.path == tmp_path / (f"{name}.gz" if gz else name)


@pytest.mark.parametrize("damage", [
    lambda gz: gz[:-20],  # stream cut short: no end-of-stream marker
    lambda gz: gz[:30] + bytes(b ^ 0xFF for b in gz[30:40]) + gz[40:],  # flipped bytes: bad deflate data or CRC
    lambda gz: b"not gzip at all",  # not a gzip file
])
def test_corrupt_gzip(tmp_path, damage):
    files, _ = fashion_files()
    write_files(tmp_path, files, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match="corrupt gzip stream") as err:
        data.load_fashion_mnist(tmp_path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- missing files and downloads

def test_missing_without_download(tmp_path, offline):
    # download=False: a FileNotFoundError naming the files and both directories, and no network call
    with pytest.raises(FileNotFoundError) as err:
        data.load_fashion_mnist(tmp_path)
    # a MissingFilesError, whose fields let `convtri lenet` speak of its own flags
    assert isinstance(err.value, data.MissingFilesError) and err.value.missing == list(data.FASHION_MNIST_FILES)
    message = str(err.value)
    assert "download=False" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert f"{tmp_path}/" in message and str(tmp_path / "FashionMNIST" / "raw") in message


def test_download(tmp_path, serve, capsys):
    # the four official URLs fetched with a progress bar, md5-checked and renamed into a flat root
    files, arrays = fashion_files()
    asked = serve(files)
    check_loaded(data.load_fashion_mnist(tmp_path / "new", download=True), arrays)
    assert asked == [data.FASHION_MNIST_URL + f"{name}.gz" for name in data.FASHION_MNIST_FILES]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(f"{n}.gz" for n in files)
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # tqdm's bar
    asked.clear()
    data.load_fashion_mnist(tmp_path / "new", download=True)
    assert asked == []  # present now: no second download


def test_download_completes_torchvision_layout(tmp_path, serve):
    # a partial torchvision download: only the missing files are fetched, into that directory
    files, arrays = fashion_files()
    raw = tmp_path / "FashionMNIST" / "raw"
    write_files(raw, {name: files[name] for name in data.FASHION_MNIST_SPLITS[0]}, gz=False)
    asked = serve(files)
    check_loaded(data.load_fashion_mnist(tmp_path, download=True), arrays)
    assert asked == [data.FASHION_MNIST_URL + f"{name}.gz" for name in data.FASHION_MNIST_SPLITS[1]]
    assert not any(p.is_file() for p in tmp_path.iterdir())  # nothing in the flat root


def test_download_md5_mismatch(tmp_path, serve):
    # the real md5 table against synthetic files: a clear error and no file (temp or final) left behind
    serve(fashion_files()[0], patch_md5=False)
    with pytest.raises(RuntimeError, match="md5 .* does not match"):
        data.load_fashion_mnist(tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_no_network(tmp_path, offline):
    # the download fails: a RuntimeError saying what is missing and where to put it
    with pytest.raises(RuntimeError, match="the download failed: .*no network in tests") as err:
        data.load_fashion_mnist(tmp_path, download=True)
    assert isinstance(err.value, data.DownloadError) and "no network in tests" in err.value.reason
    message = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "torchvision or d2l" in message
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- load_dataset and limit

def test_auto_falls_back_to_digits(tmp_path, offline, capsys):
    # "auto", empty root, no network: digits, with one line that says so and why
    pytest.importorskip("sklearn")
    train, test, name = data.load_dataset("auto", tmp_path)
    assert name == "digits" and len(train) + len(test) == 1797
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "digits" in out[0] and "no network in tests" in out[0]


def test_auto_uses_fashion_mnist_when_present(tmp_path, offline, capsys):
    # "auto" with the files in root: Fashion-MNIST, nothing printed
    files, arrays = fashion_files()
    write_files(tmp_path, files, gz=True)
    *splits, name = data.load_dataset("auto", tmp_path)
    assert name == "fashion-mnist" and capsys.readouterr().out == ""
    check_loaded(splits, arrays)


def test_fashion_mnist_never_falls_back(tmp_path, offline):
    # asked for by name, Fashion-MNIST raises instead of falling back
    with pytest.raises(RuntimeError, match="where torchvision or d2l"):
        data.load_dataset("fashion-mnist", tmp_path)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="name must be one of auto, fashion-mnist, digits"):
        data.load_dataset("cifar")


def test_limit():
    # the first n examples of every tensor; None keeps all; n must be a positive int
    dataset = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
    assert [t.tolist() for t in data.limit(dataset, 3).tensors] == [[0.0, 1.0, 2.0], [0, 1, 2]]
    assert len(data.limit(dataset, 100)) == 10 and data.limit(dataset, None) is dataset
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit: n must be a positive int"):
            data.limit(dataset, bad)


# ----------------------------------------------------------------------------- digits

def test_digits():
    # shapes, dtypes, range [0, 1], all ten classes in both splits, a stratified 80/20 split
    pytest.importorskip("sklearn")
    train, test = data.load_digits()
    assert len(train) + len(test) == 1797 and 0.19 < len(test) / 1797 < 0.21
    for dataset in (train, test):
        x, y = dataset.tensors
        assert x.shape == (len(y), 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() == 0 and 0.99 < x.max() <= 1
        assert sorted(y.unique().tolist()) == list(range(10))
    counts = torch.bincount(train.tensors[1]) + torch.bincount(test.tensors[1])
    assert torch.bincount(test.tensors[1]).tolist() == [round(0.2 * c) for c in counts.tolist()]


def test_digits_split_is_deterministic():
    # the same seed gives the same split; another seed another one
    pytest.importorskip("sklearn")
    first, again, other = data.load_digits(seed=0), data.load_digits(seed=0), data.load_digits(seed=1)
    for a, b in zip(first, again):
        assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors))
    assert not torch.equal(first[1].tensors[1], other[1].tensors[1])


def test_digits_without_scikit_learn(monkeypatch):
    # scikit-learn missing: an ImportError naming the extra to install
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'convtri\[digits\]'"):
        data.load_digits()


@pytest.mark.parametrize("test_fraction", [0.0, 1.0])
def test_digits_bad_test_fraction(test_fraction):
    # an empty train or test split is refused before scikit-learn is imported
    with pytest.raises(ValueError, match="test_fraction must be in"):
        data.load_digits(test_fraction=test_fraction)
