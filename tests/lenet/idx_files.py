"""Small IDX files for the tests: the format of Fashion-MNIST's four files, written here."""
import gzip
import struct

import numpy as np

from convtri.lenet import data


def idx_bytes(magic, array):
    """An IDX file: magic, one big-endian uint32 per dim, then the uint8 payload."""
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_files(directory, files, gz):
    """{file name without .gz: IDX bytes} into ``directory``, gzip-compressed when ``gz``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / (f"{name}.gz" if gz else name)
        path.write_bytes(gzip.compress(content) if gz else content)


def digits_as_fashion_mnist(directory):
    """scikit-learn's digits (already 28x28 in convtri.lenet.data) written as Fashion-MNIST's four gz
    files: CI has neither the network nor Fashion-MNIST, so the tests that need a learnable
    dataset behind the real Fashion-MNIST loading path use these."""
    files = {}
    for (images_name, labels_name), split in zip(data.FASHION_MNIST_SPLITS, data.load_digits()):
        images, labels = split.tensors
        files[images_name] = idx_bytes(data.IMAGES_MAGIC, (images[:, 0] * 255).round().numpy())
        files[labels_name] = idx_bytes(data.LABELS_MAGIC, labels.numpy())
    write_files(directory, files, gz=True)
    return directory
