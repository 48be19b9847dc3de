"""Draw docs/synthetic_domains.png: a few synthetic scenes, each in the source style (game) and every
target style, next to their label map in the Cityscapes palette; print the generation speed.

    python docs/make_synthetic_figure.py [--out docs/synthetic_domains.png] [--scenes 0 5 9] [--speed]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dgseg.data import CLASSES, PALETTE, STYLES, colorize, make_scene, render  # noqa: E402
from dgseg.data.synthetic import benchmark  # noqa: E402


def make_figure(out: Path, scenes: list[int], seed: int = 0, size: tuple[int, int] = (256, 512)) -> None:
    columns = ["label", *STYLES]
    fig, axes = plt.subplots(
        len(scenes), len(columns), figsize=(2.4 * len(columns), 1.22 * len(scenes) + 0.75), squeeze=False
    )
    for row, index in enumerate(scenes):
        scene = make_scene(seed, "val", index, size)
        images = [colorize(scene.label)] + [render(scene, style) for style in STYLES]
        for col, (name, image) in enumerate(zip(columns, images)):
            ax = axes[row, col]
            ax.imshow(image, interpolation="lanczos")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                title = {"label": "labels (19 classes)", "game": "game (source)"}.get(name, name)
                ax.set_title(title, fontsize=10)
    handles = [Patch(color=PALETTE[i] / 255.0, label=name) for i, name in enumerate(CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.005, right=0.995, top=0.94, bottom=0.1, wspace=0.02, hspace=0.03)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("synthetic_domains.png"))
    parser.add_argument("--scenes", type=int, nargs="+", default=[4, 11, 9])
    parser.add_argument("--speed", action="store_true", help="also measure images per second (one core)")
    args = parser.parse_args()
    make_figure(args.out, args.scenes)
    print(f"wrote {args.out}")
    if args.speed:
        import torch

        torch.set_num_threads(1)
        for style, fps in benchmark().items():
            print(f"{style:8s} {fps:6.1f} images/s (512x256, scene generation + rendering, one core)")


if __name__ == "__main__":
    main()
