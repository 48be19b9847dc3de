"""Data: datasets in their distributed layouts (read as 19 Cityscapes train IDs, 255 = ignore), the
training/evaluation transforms of the DG recipe, and a built-in synthetic domain-shift benchmark.

    ds = build_dataset("cityscapes", "/data/cityscapes", "val", transform=EvalTransform((1024, 512)))
    src = build_datasets([{"name": "gtav", "root": "/data/gtav"},
                          {"name": "synthia", "root": "/data/synthia"}], transform=TrainTransform())
    toy = build_dataset("synthetic-night", root=None, split="val", length=100, size=(256, 512), seed=0)
"""

from .check import CheckReport, add_check_parser, check_dataset, main_check, run_check
from .datasets import (
    DATASETS,
    DataError,
    SegmentationDataset,
    build_dataset,
    build_datasets,
    dataset_names,
)
from .labels import CLASSES, IGNORE_INDEX, NUM_CLASSES, PALETTE, colorize
from .synthetic import STYLES, SyntheticDataset, make_scene, render
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    denormalize,
    eval_prescale_for,
    eval_resize_for,
    normalize,
    seed_worker,
)

__all__ = [
    "CLASSES", "DATASETS", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "NUM_CLASSES", "PALETTE",
    "STYLES",
    "CheckReport", "DataError", "EvalTransform", "SegmentationDataset", "SyntheticDataset", "TrainTransform",
    "add_check_parser", "build_dataset", "build_datasets", "check_dataset", "colorize", "dataset_names",
    "denormalize", "eval_prescale_for", "eval_resize_for", "main_check", "make_scene", "normalize", "render", "run_check",
    "seed_worker",
]  # fmt: skip
