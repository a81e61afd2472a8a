"""``fit`` under data parallelism for real: two CPU processes (torchrun, gloo) against one process.

The test generates tiny data, trains once in this process with batch size 2B, then launches this same file as a
torchrun worker script (``python -m torch.distributed.run --nproc_per_node 2 tests/test_ddp.py ...``) in which both
ranks train with batch size B: a straight run (with a snapshot) and an interrupted + resumed run. It checks that the
workers really were two processes, that both ranks end with identical weights, that these equal the one-process
weights trained on the same global batches (gradients of the mean over the global batch), that resuming reproduces
the straight run, and that only rank 0 wrote the drafter, card, history and snapshot.
(``accelerate launch --cpu --num_processes 2`` starts one process on a 2-core machine, hence torchrun.)
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

B = 2  # per-process batch size; the one-process run uses 2 * B
CONFIG = dict(head_rank="d/8", draft_vocab=20, ttt_steps=2, window=16, seed=3, max_steps=4, save_every=4,
              candidates=6)  # a candidate softmax: the union of the ranks' candidate sets equals one process's


def _config(batch_size, **extra):
    from slimspec.train.fit_config import FitConfig

    return FitConfig(batch_size=batch_size, **{**CONFIG, **extra})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(data: str, out: str) -> None:
    """One rank: straight run, interrupted run, resumed run; each rank's final in-memory weights to rank_R.pt."""
    import torch.distributed as dist

    import slimspec.train.fit as fit_module
    from test_generate import tiny_target

    drafters = []
    build = fit_module.build_drafter

    def keep(*args, **kwargs):  # the drafter object each fit trains (its weights are the rank's final weights)
        drafter, columns = build(*args, **kwargs)
        drafters.append(drafter)
        return drafter, columns

    fit_module.build_drafter = keep
    target = tiny_target()
    straight = fit_module.fit(target=target, data=data, out=f"{out}/straight", progress=False,
                              config=_config(B, snapshot_steps=(2,)))
    assert dist.is_initialized() and dist.get_world_size() == 2, "torchrun did not start 2 processes"
    first = fit_module.fit(target=target, data=data, out=f"{out}/resumed", progress=False, config=_config(B),
                           stop_after=2)
    resumed = fit_module.fit(target=target, data=data, out=f"{out}/resumed", progress=False, config=_config(B))
    torch.save(dict(rank=dist.get_rank(), world_size=dist.get_world_size(), straight=straight, first=first,
                    resumed=resumed, weights=[{k: v.clone() for k, v in d.state_dict().items()} for d in drafters]),
               f"{out}/rank_{dist.get_rank()}.pt")
    dist.destroy_process_group()


def test_two_processes_train_like_one_process_on_the_global_batch(tmp_path):
    from safetensors.torch import load_file

    from slimspec.train.data import generate_data
    from slimspec.train.fit import fit
    from test_generate import tiny_target
    from test_train import PROMPTS, tiny_tokenizer

    target = tiny_target()
    data = tmp_path / "data"
    generate_data(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS, out=str(data), layer_ids=[2, 3, 3],
                  max_new_tokens=12, batch_size=4, shard_prompts=4, progress=False)
    # 29 windows: 8 one-process batches of 4, the last one short; 4 steps stay on full global batches (the last
    # global batch of an epoch differs: accelerate pads the ranks' batches to equal sizes)
    single = fit(target=target, data=str(data), out=str(tmp_path / "single"), progress=False, config=_config(2 * B))

    ddp = tmp_path / "ddp"
    ddp.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_USE_CPU"):
        env.pop(name, None)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", env["MASTER_PORT"], __file__, str(data),
                          str(ddp)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    print(f"torchrun, 2 processes: {time.perf_counter() - t0:.1f} s")
    ranks = [torch.load(ddp / f"rank_{r}.pt", weights_only=False) for r in range(2)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]

    # (a) both ranks hold the same weights, bit for bit, after every run (gradients all-reduced)
    for a, b in zip(ranks[0]["weights"], ranks[1]["weights"]):
        assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    same = [[{k: v for k, v in h.items() if k != "seconds"} for h in r["straight"]["history"]] for r in ranks]
    assert same[0] == same[1]  # the same history (the global batches') on both ranks

    # (b) two processes with batch B = one process with batch 2 B: same global batches, same mean loss
    straight = ranks[0]["straight"]
    assert straight["finished"] and straight["steps"] == single["steps"] == 4
    for h1, h2 in zip(single["history"], straight["history"]):
        assert h1["trained"] == h2["trained"] and h2["tokens"] <= h1["tokens"]  # each rank pads only its own batch
        assert abs(h1["loss"] - h2["loss"]) <= 1e-5 * abs(h1["loss"]), (h1["loss"], h2["loss"])
        torch.testing.assert_close(torch.tensor(h2["agreement"]), torch.tensor(h1["agreement"]), atol=1e-6,
                                   rtol=0, equal_nan=True)
    one, two = load_file(tmp_path / "single" / "model.safetensors"), load_file(ddp / "straight" / "model.safetensors")
    assert sorted(one) == sorted(two)
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-5)

    # (c) interrupted after 2 steps and resumed on 2 processes = the straight 2-process run
    assert ranks[0]["first"]["steps"] == 2 and not ranks[0]["first"]["finished"]
    resumed = ranks[0]["resumed"]
    assert resumed["finished"] and [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]  # the whole history
    again = load_file(ddp / "resumed" / "model.safetensors")
    for k in two:
        torch.testing.assert_close(again[k], two[k], atol=1e-6, rtol=1e-6)

    # (d) rank 0 wrote one Hub-ready folder, history and snapshot; the checkpoint holds both ranks' RNG states
    for folder in (ddp / "straight", ddp / "resumed"):
        assert {"README.md", "config.json", "generation_config.json", "model.safetensors", "modeling_slimspec.py",
                "training.json"} <= {p.name for p in folder.iterdir()}
        assert [p.name for p in (folder / ".checkpoints").iterdir()] == ["step_4"]
        saved = {p.name for p in (folder / ".checkpoints" / "step_4").iterdir()}
        assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl"} <= saved
    info = json.loads((ddp / "straight" / "training.json").read_text())
    assert info["processes"] == 2 and [h["loss"] for h in info["history"]] == [h["loss"] for h in straight["history"]]
    from modeling_slimspec import SlimSpecDrafter

    SlimSpecDrafter.from_pretrained(ddp / "straight" / "snapshots" / "step_2")


def test_a_batch_without_trained_positions_still_reaches_every_parameter(tmp_path):
    """A rank whose batch has nothing to train on must still backpropagate into every trainable parameter (zero
    gradients), or DDP's gradient all-reduces of the ranks fall out of step."""
    from slimspec.train.data import DistillationData, collate, generate_data
    from slimspec.train.fit import TrainStep
    from slimspec.train.step import build_drafter
    from test_generate import tiny_target
    from test_train import PROMPTS, tiny_tokenizer

    target = tiny_target()
    generate_data(target=target, tokenizer=tiny_tokenizer(), prompts=PROMPTS[:4], out=str(tmp_path),
                  layer_ids=[2, 3, 3], max_new_tokens=4, batch_size=4, shard_prompts=4, sampled=False, progress=False)
    data = DistillationData(tmp_path, window=16)
    drafter, columns = build_drafter(target, _config(2), data)
    batch = collate([data[0], data[1]])
    batch["loss_mask"][:] = False  # no response position: nothing to train on under loss_on="response"
    loss, agreement = TrainStep(drafter, _config(2, candidates=0, loss_on="response"), columns)(batch)
    assert loss.item() == 0.0 and all(a != a for a in agreement)  # nan: no position
    loss.backward()
    trainable = [p for p in drafter.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and not p.grad.any() for p in trainable)
    drafter.detach()


if __name__ == "__main__":  # a torchrun worker: tests/test_ddp.py DATA OUT
    sys.path[:0] = [str(Path(__file__).parents[1]), str(Path(__file__).parent)]
    import conftest  # noqa: F401  (offline Hub, the repo on sys.path)

    torch.set_num_threads(1)
    _worker(sys.argv[1], sys.argv[2])
