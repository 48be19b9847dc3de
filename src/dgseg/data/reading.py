"""Decoding one image or label file to a numpy array, and :class:`DataError`, the data package's error.

Every failure (missing, truncated, corrupt, not an image, a colour label) is a DataError naming the file
and what was expected; no other exception leaves :func:`read_image` or :func:`read_label`. Listing and
pairing the files of a dataset is :mod:`dgseg.data.pairing`; the datasets are :mod:`dgseg.data.datasets`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


class DataError(ValueError):
    """A dataset problem: the message names the file or folder and says what was expected."""


class SplitNotFound(DataError):
    """The split asked for is not in the dataset: a name the layout does not know, no folder of it beside the
    split folders that are there, no split file for it. The choice of split is wrong rather than the dataset
    (``dgseg data check`` refuses it as a ``--split`` error, exit 2)."""


def _to_rgb8(im: Image.Image, path: str | Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a decoded image of any mode (as OpenCV's IMREAD_COLOR: alpha dropped,
    grayscale repeated, 16-bit samples scaled to 8 bits by their high byte)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        gray = np.asarray(im)
        if gray.size and (int(gray.min()) < 0 or int(gray.max()) > 65535):
            raise DataError(
                f"{path}: 32-bit integer image with values {int(gray.min())}..{int(gray.max())}; "
                "expected an 8- or 16-bit image"
            )
        gray = (gray.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise DataError(f"{path}: floating-point image (mode F); expected an 8- or 16-bit image")
    return np.array(im.convert("RGB"))


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3]; DataError naming the file when it cannot be.

    Grayscale, palette, RGBA and CMYK images are converted (alpha dropped); 16-bit images keep their
    high byte (as OpenCV reads them in colour mode). The EXIF orientation tag is applied, as OpenCV's
    IMREAD_COLOR (mmcv's ``imfrombytes``, Rein's loader) applies it: a phone photo stored sideways is
    read upright. Labels are read as stored (mmcv reads them ``unchanged``). Any decoder failure (truncated, corrupt, not an
    image, a decompression bomb) is a DataError; no other exception leaves this function.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb8(ImageOps.exif_transpose(im), path)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise DataError(
            f"{path}: unreadable or truncated image ({type(e).__name__}: {e}); expected a complete image file"
        ) from e


def exif_transposes(path: str | Path) -> int | None:
    """The EXIF orientation tag of an image file when it transposes the image as read (5, 6, 7, 8: turned
    by 90 degrees, width and height swapped), else None (no tag, another value, or an unreadable file).
    Reads the file's header only, not its pixels."""
    try:
        with Image.open(path) as im:
            tag = im.getexif().get(0x0112)
    except Exception:  # the image was decoded before this is asked; any failure here means: no tag
        return None
    return tag if tag in (5, 6, 7, 8) else None


def header_size(path: str | Path, oriented: bool = True) -> tuple[int, int] | None:
    """(H, W) of an image file from its header, no pixel decoded; None when the header cannot be read (reading
    the file says why, in its turn). ``oriented``: as :func:`read_image` reads it, turned by an EXIF orientation
    tag that swaps width and height; a PNG's tag is seen when its eXIf chunk comes before the pixels, where the
    PNG specification puts it (PIL's ``getexif`` of a PNG would decode the pixels to look further)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            if not oriented:
                return height, width
            exif = Image.Image.getexif(im) if im.format == "PNG" and "exif" not in im.info else im.getexif()
            tag = exif.get(0x0112)
    except Exception:
        return None
    return (width, height) if tag in (5, 6, 7, 8) else (height, width)


LABEL_MODES = ("P", "L", "I;16", "I;16L", "I;16B", "I")


def read_label(path: str | Path, reader: str = "png8") -> np.ndarray:
    """Decode a label file to raw IDs [H, W] (uint8, uint16 or int32); DataError naming the file when
    it cannot be (no other exception leaves this function).

    ``png8``: a single-channel PNG (palette indices or grayscale values, 8 or 16 bit); a colour (RGB,
    RGBA) or grey+alpha image is refused, since its pixel values are not class IDs.
    ``png16``: the first channel of a PNG of any depth and channel count (SYNTHIA's 16-bit RGB labels;
    PIL alone silently keeps only the high byte of those, see :func:`read_png16_first_channel`).
    """
    try:
        if reader == "png16":
            return read_png16_first_channel(path)
        with Image.open(path) as im:
            mode = im.mode
            if mode not in LABEL_MODES:
                raise DataError(
                    f"{path}: label image has mode {mode}; expected a single-channel PNG of class IDs "
                    f"(palette or grayscale), not a colour visualisation"
                )
            im.load()
            return np.asarray(im)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: label file not found") from e
    except Exception as e:  # see read_image
        want = "a 16-bit PNG" if reader == "png16" else "a complete PNG"
        raise DataError(f"{path}: unreadable or truncated label ({type(e).__name__}: {e}); expected {want}") from e


def read_png16_first_channel(path: str | Path) -> np.ndarray:
    """First channel of a PNG with its full bit depth: [H, W] uint16 (or uint8 for 8-bit files).

    PIL keeps only the high byte of 16-bit RGB(A) samples; such files are read twice (high bytes as
    PIL does by default, then low bytes through the little-endian raw mode) and the bytes joined.
    (torchvision's libpng binding is not used: it crashes the process on some corrupt files.)
    """
    with Image.open(path) as im:
        tile = im.tile
        if not (len(tile) == 1 and tile[0][3] in ("RGB;16B", "RGBA;16B")):
            im.load()
            arr = np.asarray(im)
            return arr if arr.ndim == 2 else arr[..., 0]
        im.load()
        high = np.asarray(im)[..., 0].astype(np.uint16)
    with Image.open(path) as im:
        t = im.tile[0]
        low_mode = t[3].replace("16B", "16L")
        im.tile = [t._replace(args=low_mode) if hasattr(t, "_replace") else (*t[:3], low_mode)]
        im.load()
        low = np.asarray(im)[..., 0].astype(np.uint16)
    return (high << 8) | low


_read_png16_first_channel_pil = read_png16_first_channel  # the name older code and tests import
