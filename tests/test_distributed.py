"""Two gloo processes on CPU end with identical weights, equal to one process on the same global batch; the
sampler splits any dataset across ranks; a run resumes only on the number of processes it was saved by."""

from __future__ import annotations

import itertools
import os
import socket
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from tiny import tiny_dict

from dgseg.engine.checkpoint import latest_checkpoint, load_checkpoint
from dgseg.engine.data import SeededSamples
from dgseg.engine.distributed import EpochSampler, end_distributed

SECTIONS = {"model__adapter__link": False, "model__head": {"name": "linear"}, "train__max_iters": 3,
            "train__checkpoint_interval": 100}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, tests_dir: str, extra: dict | None = None) -> None:
    sys.path.insert(0, tests_dir)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from tiny import tiny_dict as td

    import dgseg
    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    cfg = config_from_dict(td(train__batch_size=1, **{**SECTIONS, **(extra or {})}))
    model = dgseg.build_model(cfg)
    train(cfg, Path(out) / "ddp", progress=False, model=model)
    save_file(model.trainable_state_dict(), str(Path(out) / f"rank{rank}.safetensors"))
    end_distributed()  # as the CLI ends a command


FULL = {"model__adapter": {"name": "full", "link": False}}  # the backbone's final norm trains and is never read


@pytest.mark.parametrize("extra", [{}, FULL], ids=["rein", "full-fine-tuning"])
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path, capfd, extra):
    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    single = config_from_dict(tiny_dict(train__batch_size=2, **{**SECTIONS, **extra}))
    train(single, tmp_path / "single", progress=False)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), str(Path(__file__).parent), extra), nprocs=2,
                       join=True, start_method="spawn")
    said = "DistributedDataParallel runs with find_unused_parameters=True" in capfd.readouterr().err
    assert said == bool(extra)  # only where a parameter is never read: the graph walk costs every step
    ref, _ = load_checkpoint(latest_checkpoint(tmp_path / "single"))
    saved, _ = load_checkpoint(latest_checkpoint(tmp_path / "ddp"))  # written by rank 0 only
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert set(ref) == set(rank0) == set(rank1) == set(saved)
    for k in ref:
        torch.testing.assert_close(rank1[k], rank0[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(saved[k], rank0[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(rank0[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)


def _skip_worker(rank: int, world: int, port: int, out: str, tests_dir: str, data: str) -> None:
    sys.path.insert(0, tests_dir)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from tiny import tiny_dict as td

    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    cfg = config_from_dict(td(train__batch_size=1, data__on_error="skip", data__val=[], data__source=None,
                              data__train=[{"name": "folder", "root": data, "split": "train"}], **SECTIONS))
    train(cfg, Path(out), progress=False)
    end_distributed()  # as the CLI ends a command


def test_a_sample_skipped_on_another_rank_is_logged_and_kept_in_the_checkpoint(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from dgseg.engine.checkpoint import load_train_state

    data = tmp_path / "data" / "train"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(data / f"images/{i}.png")
        Image.fromarray(rng.integers(0, 19, (48, 64), dtype=np.uint8)).save(data / f"labels/{i}.png")
    (first, _), = _first(EpochSampler(8, seed=0, rank=1, world=2, start=0), 1)  # rank 1's first sample
    bad = data / f"images/{first}.png"
    bad.write_bytes(b"not a png")
    mp.start_processes(_skip_worker, args=(2, _free_port(), str(tmp_path / "run"), str(Path(__file__).parent),
                                           str(tmp_path / "data")), nprocs=2, join=True, start_method="spawn")
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["skipped_sample"] for r in logged if "skipped_sample" in r] == [str(bad)]
    state = load_train_state(latest_checkpoint(tmp_path / "run"))
    assert [p for p, _ in state["skipped_samples"]] == [str(bad)]  # a resume knows it too


def _eval_worker(rank: int, world: int, port: int, out: str, tests_dir: str, data: str) -> None:
    sys.path.insert(0, tests_dir)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import json
    import warnings

    from tiny import tiny_config

    from dgseg.config import DatasetSpec
    from dgseg.engine.distributed import init_distributed
    from dgseg.engine.evaluate import evaluate_domain

    class Constant(torch.nn.Module):  # class 0 everywhere
        def predict(self, image, **kwargs):
            return torch.nn.functional.one_hot(torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.long),
                                               19).permute(0, 3, 1, 2).float()

    rank, world, device = init_distributed()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_domain(Constant(), DatasetSpec(name="folder", root=data, split="val"),
                                 tiny_config(data__on_error="skip"), device, rank, world, progress=False)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    end_distributed()


def test_the_images_scored_and_files_left_out_on_every_rank_reach_the_evaluation_result(tmp_path):
    """Under torchrun each rank scores its share: ``images`` counts every rank's and ``skipped`` lists a bad file
    another rank met, as the confusion matrix sums every rank's pixels."""
    import json

    import numpy as np
    from PIL import Image

    data = tmp_path / "data" / "val"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(data / f"images/{i}.png")
        Image.fromarray(np.zeros((40, 48), np.uint8)).save(data / f"labels/{i}.png")
    (data / "images/1.png").write_bytes(b"not a png")  # index 1: rank 1's
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(data / "images/lonely.png")  # no label
    mp.start_processes(_eval_worker, args=(2, _free_port(), str(tmp_path), str(Path(__file__).parent),
                                           str(tmp_path / "data")), nprocs=2, join=True, start_method="spawn")
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["images"] == 5 and sum(map(sum, result["confusion"])) == 5 * 40 * 48
        assert [(Path(s["file"]).name, s.get("while")) for s in result["skipped"]] == [("1.png", None),
                                                                                       ("lonely.png", "listing files")]


def _cli_worker(rank: int, world: int, port: int, config: str, out: str, tests_dir: str) -> None:
    sys.path.insert(0, tests_dir)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dgseg.cli import main

    code = main(["train", config, "--out", out, "--no-progress"])
    Path(out).with_name(f"rank{rank}.txt").write_text(f"{code} {torch.distributed.is_initialized()}")


def test_dgseg_train_under_torchrun_destroys_its_process_group_before_it_returns(tmp_path):
    """As torchrun runs ``dgseg train``: the process group ends with the command (a gloo process left with
    its group at exit can abort, "terminate called without an active exception")."""
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_dict(train__batch_size=1, **SECTIONS)))
    mp.start_processes(_cli_worker, args=(2, _free_port(), str(config), str(tmp_path / "run"),
                                          str(Path(__file__).parent)), nprocs=2, join=True, start_method="spawn")
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["0 False", "0 False"]
    assert latest_checkpoint(tmp_path / "run") is not None


# ------------------------------------------------------------ the sampler, per-sample seeds, resuming on N processes


def _first(sampler: EpochSampler, n: int) -> list[tuple[int, int]]:
    """The first ``n`` items, or a failure after 10 s (a sampler that cannot pad its epoch never yields)."""
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(itertools.islice(sampler, n)), daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), f"{sampler.world} ranks of {sampler.length} samples: rank {sampler.rank} waits"
    return got


@pytest.mark.parametrize("length, world", [(1, 3), (2, 8), (5, 4), (7, 2)])
def test_every_rank_gets_a_share_even_of_fewer_samples_than_ranks(length, world):
    """Padded as DistributedSampler pads: the permutation repeated, so each rank has ceil(length / world)."""
    per_rank = -(-length // world)
    shares = [_first(EpochSampler(length, 0, rank, world), per_rank) for rank in range(world)]
    assert all(len(s) == per_rank and {e for _, e in s} == {0} for s in shares)
    assert {i for s in shares for i, _ in s} == set(range(length))  # every sample read in the epoch


def test_a_seed_near_2_to_the_32_seeds_any_epoch_and_index():
    samples = SeededSamples([{"x": torch.rand(1)} for _ in range(3)], seed=2**32 - 1)
    assert samples[(2, 10**9)]["x"].shape == (1,)  # (seed, epoch, index) combined below torch's 2**64


def _two_steps(out, **sections):
    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    cfg = config_from_dict(tiny_dict(**{**RESUME, **sections}))
    train(cfg, out, progress=False)
    return cfg


RESUME = {**SECTIONS, "train__max_iters": 2, "train__checkpoint_interval": 1, "data__val": [],
          "data__source": None}


def _resume_starts(monkeypatch, out, **sections) -> list[int]:
    """Resumes the run in ``out`` to step 3; returns the sampler start it built its loader with."""
    from dgseg.config import config_from_dict
    from dgseg.engine import train_setup
    from dgseg.engine.train import train

    starts, build = [], train_setup.build_train_loader
    monkeypatch.setattr(train_setup, "build_train_loader",
                        lambda cfg, rank, world, start: starts.append(start) or build(cfg, rank, world, start))
    train(config_from_dict(tiny_dict(**{**RESUME, "train__max_iters": 3, **sections})), out, resume=True,
          progress=False)
    return starts


def test_a_checkpoint_of_another_number_of_processes_is_refused_naming_both(tmp_path):
    from dgseg.config import config_from_dict
    from dgseg.engine.train import train

    cfg = _two_steps(tmp_path)
    state_file = tmp_path / "checkpoints" / "iter_0000002.state.pt"
    state = torch.load(state_file, weights_only=True)
    assert (state["world"], state["rank_samples"]) == (1, 2 * cfg.train.batch_size)
    torch.save(dict(state, world=2), state_file)  # as a run of 2 processes saves it
    with pytest.raises(ValueError) as err:
        train(config_from_dict(tiny_dict(**{**RESUME, "train__max_iters": 3})), tmp_path, resume=True,
              progress=False)
    msg = str(err.value)
    assert "iter_0000002.safetensors was saved by a run on 2 processes, this one runs on 1 process" in msg
    assert "Resume on 2 processes (e.g. torchrun --nproc_per_node 2 ...)" in msg


def test_a_resumed_process_reads_on_after_the_samples_it_read_also_with_another_batch_size(tmp_path, monkeypatch):
    _two_steps(tmp_path, train__batch_size=2)
    assert _resume_starts(monkeypatch, tmp_path, train__batch_size=1) == [4]  # 2 steps x 2 samples


def test_a_checkpoint_without_the_record_resumes_on_this_many_processes(tmp_path, monkeypatch):
    _two_steps(tmp_path, train__batch_size=2)
    state_file = tmp_path / "checkpoints" / "iter_0000002.state.pt"
    state = torch.load(state_file, weights_only=True)
    torch.save({k: v for k, v in state.items() if k not in ("world", "rank_samples")}, state_file)
    assert _resume_starts(monkeypatch, tmp_path) == [4]  # steps x this run's batch_size x accumulate


def test_a_process_group_the_caller_started_is_left_to_the_caller(tmp_path, monkeypatch):
    """``dgseg.cli.main`` called inside a script that runs its own group: the command does not end it."""
    import yaml

    from dgseg.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_dict()))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        assert main(["info", str(config)]) == 0
        assert torch.distributed.is_initialized()
    finally:
        torch.distributed.destroy_process_group()


def test_a_teardown_error_after_a_finished_command_is_a_warning(monkeypatch, capsys):
    from dgseg.engine import distributed

    def broken() -> None:
        raise RuntimeError("NCCL communicator was aborted")

    monkeypatch.setattr(distributed, "end_distributed", broken)
    distributed.end_command_group("train")
    assert capsys.readouterr().err == ("dgseg train: warning: the process group did not shut down cleanly: "
                                       "NCCL communicator was aborted\n")
