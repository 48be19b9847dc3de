"""The synthetic benchmark renders byte-identical images and labels: SHA-256 of 3 scenes x 7 styles x 2
sizes, recorded before the module was reorganised (issue 19), so no refactoring changes what it draws.

Recorded with numpy 2.4.6 on x86-64. numpy's float32 ``exp``/``power`` loops are chosen by CPU features,
and their last bits differ between instruction sets: AVX2 and AVX-512 give these bytes, plain SSE4 gives
other bytes for 4 of the 48 entries, so the test runs where AVX2 is available. Re-record (only for an
intended change of the pictures): ``PYTHONPATH=src python tests/test_data_synthetic_hashes.py`` prints
the table below.
"""

from __future__ import annotations

import hashlib
import platform

import numpy as np
import pytest

from dgseg.data import STYLES, make_scene, render

try:
    from numpy._core._multiarray_umath import __cpu_features__ as _CPU
except ImportError:  # numpy < 2
    from numpy.core._multiarray_umath import __cpu_features__ as _CPU

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not _CPU.get("AVX2", False),
    reason="the hashes were recorded with numpy's AVX2/AVX-512 float32 loops (other CPUs round differently)",
)

SCENES = ((0, "train", 2), (3, "val", 5), (7, "test", 11))  # (seed, split, index)
SIZES = ((64, 128), (90, 120))  # (H, W): 2:1 and 3:4, so nothing relies on one aspect ratio


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def compute() -> dict[str, str]:
    """{"seed/split/index/HxW/label" or ".../<style>": SHA-256} for every scene, size and style."""
    out = {}
    for seed, split, index in SCENES:
        for size in SIZES:
            scene = make_scene(seed, split, index, size)
            key = f"{seed}/{split}/{index}/{size[0]}x{size[1]}"
            out[f"{key}/label"] = digest(scene.label)
            for style in STYLES:
                out[f"{key}/{style}"] = digest(render(scene, style))
    return out


EXPECTED: dict[str, str] = {
    "0/train/2/64x128/label": "58e907576f063a08a7742d8a293b8624a709f5abd829c371c4e15df6b100cf1b",
    "0/train/2/64x128/game": "f74bdf2e4bab121a5da20e4fdcff0ca90b64c372b92314b8da6261dd7dd0fcb1",
    "0/train/2/64x128/photo": "47ba3de50295280fb445ab6a4005cb7c244582c0dfa01e09f32d078cb9fd5bc1",
    "0/train/2/64x128/night": "7b849d6eac4219919987cd265c9709e40c60b996daa40b5eae0e33fcf0637799",
    "0/train/2/64x128/fog": "317e8bffed2a6989eff6c7801222355cd814d53405a468fe22c4e9acb94de8e4",
    "0/train/2/64x128/snow": "1e4f08122aa58ce214e1ab9c540c2abc8146498b405a32de29596e9ea89b8a3a",
    "0/train/2/64x128/rain": "c2b1048a1196d45c1cb3167608743a899ffd92088a367dc5f8eb5c5c1a2d41f3",
    "0/train/2/64x128/palette": "279a29fc1a608edfe440241c79914c0bf0d1bde4dcc5a5aa14bcf84da11ceabf",
    "0/train/2/90x120/label": "39512cf3a71ee6f02afb920642a1be618b15588707b5dd330c30a132eb99ab0e",
    "0/train/2/90x120/game": "4ed55f11a3621b51e053d090cd63731073c73f0b2c9bbf2f2ab56f2aaf0720d5",
    "0/train/2/90x120/photo": "61f9cf678bce97b0aabc37ab8dadd626c29d161b97fbd4b2d8689b6f5ac2d6a3",
    "0/train/2/90x120/night": "46d880dfeab3d02894963199022a1591b8684097ac5ce6a93311225e9d1e6a62",
    "0/train/2/90x120/fog": "b80e7b266cee5999f60183d7ddd91d4e0f457ef1acf3a28bfad46203a0ccae34",
    "0/train/2/90x120/snow": "fe1a9ea73bece16961a3225ce45856a3fe753d771f5564ee61e1d37d40515f58",
    "0/train/2/90x120/rain": "8f683820da51f15df2822dde25867f3bf31514e3e173f44cb286d89e63b5b60d",
    "0/train/2/90x120/palette": "6e64479f4c95d36850c855ed7a254adc5c52fe298ee5f612dd929543d84972c8",
    "3/val/5/64x128/label": "3987301166f997dfc861bbd9c9f99e329b8aeaa1a4f9fef9b2f7b19c46376b01",
    "3/val/5/64x128/game": "bf3a1fb95040d3b69a3f8255f864b94085f340cc7111d45c6f1d576b4b12e4f1",
    "3/val/5/64x128/photo": "267f98b55643d6e58bbd47e4c8c32b05a071792d3d93d3fffa17c105fd07bb36",
    "3/val/5/64x128/night": "42c870c2acd9c1b8d752583715aa560b61eafc14cb5ca10e27226793507d1fc8",
    "3/val/5/64x128/fog": "a3e70052f0b5d090a879849885c8d58c842e7d710d6bfe2c56a1233868dc723b",
    "3/val/5/64x128/snow": "8b75365123b95a8a5e463251c87b003bcfbe6684688dbe342a75fd652a850f6e",
    "3/val/5/64x128/rain": "effe1afcdfac919cdd7dd186adcd03942aba939c28a0423721c93d6a53c91cfc",
    "3/val/5/64x128/palette": "e8a5eb849293e978441f18b6656830bd18e2e8c7d683586f87edb54230174b42",
    "3/val/5/90x120/label": "64be9b88aa0974844212ed4fe8baecb1b943b11073ec539208eb787e4e16b3a1",
    "3/val/5/90x120/game": "a4ed79400bd022025a455f470d6a076afa9f57934278ce22bf82a586da731e70",
    "3/val/5/90x120/photo": "bdb07d85847c863fe1076bb9417e7ac4c567529dc5bd000033f4a51dd84aa567",
    "3/val/5/90x120/night": "74d212d1c339e47847fa910b63db0526f12693ee00d918b0429638c7ed5f2fc4",
    "3/val/5/90x120/fog": "52acb85651069dc8448083a3e8b57d6168dcabb283a123c4b460c9342df2422d",
    "3/val/5/90x120/snow": "514c29d3a43b1fdfc727ca6f4476bb77c1c60a991ed6934c9eba3976a402b24e",
    "3/val/5/90x120/rain": "e87769a17ce8934b54598a6f2e30fdb72c19a7fd2f01d3c36f864db089a8a24b",
    "3/val/5/90x120/palette": "6fc59027dc1536895eb23990435331a140effdd885743459ed39eef7175133d8",
    "7/test/11/64x128/label": "397296e46a5c06c7dc47979479335aec4ba76625a40983380110546c6db3dbc9",
    "7/test/11/64x128/game": "4ec2cfdc78c0e1650b5988970f5a1a8ba0c7f2781deead5b525eb3a08c87ff73",
    "7/test/11/64x128/photo": "1a064e61f58f5bf99025e9d760fefe3dca63794f973938dd9be3b8683aff6f06",
    "7/test/11/64x128/night": "94602d17e904dcc7d83118cc8af4b47b29450efa2f9678ade32efe3fb1870c43",
    "7/test/11/64x128/fog": "ed527a89ec90d0dc205a4e26a53ebf60d54c11d9c9679a89aee9c05ea3491744",
    "7/test/11/64x128/snow": "2a1f3aaa80fc9aa9c09371751b6e7f760d3484e32eefc4993a1f9050b47a838d",
    "7/test/11/64x128/rain": "95e283306d60eb8ff5d6ec44b1cac7c3225e96c7e6fc774d371dd2aedb68df7b",
    "7/test/11/64x128/palette": "3fb4fd70b1f9eb61d4439cb3ddacf6a0d09e4afba6341f6526e2c68a61da5ead",
    "7/test/11/90x120/label": "a5b0c8b61a7ed2815f0ac02f2e3fabad999ce266b4b9eac8a00d23847b042445",
    "7/test/11/90x120/game": "333bd7210fd5e8810efa4bef39c2d46256845008e36eb152e31aa4591e4b48c9",
    "7/test/11/90x120/photo": "5046c60c9a5b7d16016feb384d671b7d0d453ece53db9adef9fd63ba71909b85",
    "7/test/11/90x120/night": "acae7ebe02b6b0eb015856a8b737117cf68f416cda43f7f41238fa8ce172c0df",
    "7/test/11/90x120/fog": "b652034e8f513a9c9ee3693ede7bf372ee0235efd401db3c776005a52636c18d",
    "7/test/11/90x120/snow": "016aab45b0b321ff340e3f7a7a2ffb26977a5f4ff398cf0bdd9e7f69e094eeab",
    "7/test/11/90x120/rain": "5fb0eb7ee781c1aaa1c3dae0e9c151e52bbc67541cc9264e868114704b78554e",
    "7/test/11/90x120/palette": "e1756578416ba37ab3758ded0289ec6ce06a4d075c9c41a5bf769b2036b31b60",
}


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return compute()


def test_table_covers_every_scene_size_and_style(hashes):
    assert len(hashes) == len(SCENES) * len(SIZES) * (len(STYLES) + 1) == len(EXPECTED)
    assert set(hashes) == set(EXPECTED)


@pytest.mark.parametrize("style", ["label", *STYLES])
def test_rendered_bytes_are_unchanged(hashes, style):
    changed = [k for k in EXPECTED if k.endswith(f"/{style}") and hashes[k] != EXPECTED[k]]
    assert not changed, (
        f"synthetic output changed for {changed} (recorded with numpy 2.4.6, now {np.__version__})"
    )


if __name__ == "__main__":
    print("EXPECTED: dict[str, str] = {")
    for k, v in compute().items():
        print(f'    "{k}": "{v}",')
    print("}")
