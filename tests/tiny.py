"""A tiny experiment for engine tests: a 2-block ViT, a small head, synthetic scenes of 48 x 64."""

from __future__ import annotations

from dgseg.config import config_from_dict

TINY_BACKBONE = {"name": "vit_small_patch14_dinov2", "weights": None, "patch_size": 8, "img_size": 32,
                 "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}
TINY_HEAD = {"hidden_dim": 32, "num_queries": 8, "enc_layers": 1, "enc_ffn": 64, "dec_layers": 2, "dec_ffn": 64,
             "num_heads": 2, "train_points": 256}


def tiny_dict(**sections) -> dict:
    data = {
        "name": "tiny",
        "model": {"backbone": dict(TINY_BACKBONE), "adapter": {"name": "rein", "tokens": 8, "query_dim": 32},
                  "head": dict(TINY_HEAD)},
        "data": {
            "train": [{"name": "synthetic-game", "split": "train", "length": 16, "size": [48, 64]}],
            "val": [{"name": "synthetic-game", "split": "val", "length": 2, "size": [48, 64]},
                    {"name": "synthetic-night", "split": "val", "length": 2, "size": [48, 64]}],
            "source": "synthetic-game", "crop_size": [32, 32], "scale": [128, 48], "ratio_range": [0.8, 1.2],
            "num_workers": 0,
        },
        "train": {"max_iters": 4, "batch_size": 2, "lr": 1e-3, "log_interval": 1, "checkpoint_interval": 2,
                  "eval_interval": 1000, "keep_last": 5, "seed": 0},
        "eval": {"mode": "whole", "crop": 32, "stride": 24},
    }
    for key, value in sections.items():
        node = data
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return data


def tiny_config(**sections):
    """``tiny_config(train__max_iters=6, model__head__name="linear")`` overrides nested keys."""
    return config_from_dict(tiny_dict(**sections))


TINY_EVA02 = {"weights": None, "img_size": 32, "patch_size": 8, "model_kwargs": {"embed_dim": 32, "num_heads": 2}}


def tiny_vltseg_config(recipe: str = "vltseg_plain_eva02_clip_l_gta.yaml"):
    """A shipped VLTSeg recipe (its own train keys, neck and text branch) with its EVA02-CLIP-L encoder at
    width 32 (all 24 blocks, random weights) and the tiny head; a text tower, if any, without weights."""
    import dataclasses
    from pathlib import Path

    import dgseg

    data = dataclasses.asdict(dgseg.load_config(Path(dgseg.__file__).parent / "configs" / recipe))
    data["model"]["backbone"].update(TINY_EVA02)
    data["model"]["head"].update(TINY_HEAD)
    if data["model"]["text"]["name"] != "none":
        data["model"]["text"]["weights"] = None
    return config_from_dict(data)
