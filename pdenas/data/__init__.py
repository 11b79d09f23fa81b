"""The data the search trains on: real image datasets as uint8 tensors, split and batched.

``load_dataset(source)`` takes a registered name (``digits``: scikit-learn's bundled 8x8 digits at
32x32, no download; ``cifar10``/``cifar100``: torchvision, downloaded into the cache folder) or a path
to an ImageFolder folder or ``.tar.gz`` of one, decodes every image once (cached on disk), makes a
seeded, stratified train/validation split and returns an :class:`ImageData`. Its ``train_batches``
and ``val_batches`` give normalized float batches with vectorized augmentation (random crop with
padding, horizontal flip where valid). New datasets register with ``@register_dataset("name")``.
"""

from . import _digits, _torchvision  # noqa: F401  (registers the built-in datasets)
from ._batches import Batches, augment_batch, iterate_batches
from ._errors import DataError
from ._image_data import ImageData
from ._load import clear_memo, load_dataset
from ._registry import RawImages, list_datasets, register_dataset

__all__ = [
    "Batches",
    "DataError",
    "ImageData",
    "RawImages",
    "augment_batch",
    "clear_memo",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
