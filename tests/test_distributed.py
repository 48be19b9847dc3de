"""Two gloo processes on CPU end with identical weights, equal to one process on the same global batch."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from tiny import tiny_dict

from dgseg.engine.checkpoint import latest_checkpoint, load_checkpoint

SECTIONS = {"model__adapter__link": False, "model__head": {"name": "linear"}, "train__max_iters": 3,
            "train__checkpoint_interval": 100}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, tests_dir: str) -> None:
    sys.path.insert(0, tests_dir)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from tiny import tiny_dict as td

    import dgseg
    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    cfg = config_from_dict(td(train__batch_size=1, **SECTIONS))
    model = dgseg.build_model(cfg)
    train(cfg, Path(out) / "ddp", progress=False, model=model)
    save_file(model.trainable_state_dict(), str(Path(out) / f"rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    single = config_from_dict(tiny_dict(train__batch_size=2, **SECTIONS))
    train(single, tmp_path / "single", progress=False)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), str(Path(__file__).parent)), nprocs=2,
                       join=True, start_method="spawn")
    ref, _ = load_checkpoint(latest_checkpoint(tmp_path / "single"))
    saved, _ = load_checkpoint(latest_checkpoint(tmp_path / "ddp"))  # written by rank 0 only
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert set(ref) == set(rank0) == set(rank1) == set(saved)
    for k in ref:
        torch.testing.assert_close(rank1[k], rank0[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(saved[k], rank0[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(rank0[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)
