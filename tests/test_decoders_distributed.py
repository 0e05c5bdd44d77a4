"""pyinvert.decoders.train under a real ``torchrun --nproc_per_node 2`` (gloo on the CPU):
each rank takes half of every global batch, so 2 processes give the weights of 1 process with
the same global batch, up to the float32 rounding of the gradient all-reduce."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from pyinvert.decoders import train
photos = torch.load(sys.argv[1])
res = train("hog", list(photos), steps=3, batch_size=4, crop=32, width=4, loss="pixel+feature",
            feature_weight=1.0, progress=False, seed=2, out=sys.argv[2])
"""

#: Tolerance of the 2-process weights against 1 process: the all-reduce sums the ranks'
#: float32 gradients in another order than one process's batch mean (rounding ~1e-7
#: relative); Adam divides by the root of the second moment, which magnifies that rounding
#: for the weights whose gradient is near zero. 1e-5 absolute is 0.5 % of one Adam step
#: (lr 2e-3); measured: at most 5.7e-6 after 3 steps (weights ~0.05).
RTOL, ATOL = 0.0, 1e-5


@pytest.mark.slow(reason="starts 2 torchrun worker processes (~10-20 s on 2 shared cores)")
def test_two_processes_equal_one(tmp_path):
    g = torch.Generator().manual_seed(0)
    photos = torch.nn.functional.interpolate(
        torch.rand(3, 3, 6, 6, generator=g), size=(48, 52), mode="bilinear"
    )
    torch.save(photos, tmp_path / "photos.pt")
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # the 1-process run is a plain one
        env.pop(key, None)
    # both runs in fresh processes with one thread (this process's thread count and state
    # are whatever the tests before set)
    script, photos_file = str(tmp_path / "run.py"), str(tmp_path / "photos.pt")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    for cmd in (
        [*launch, "2", script, photos_file, str(tmp_path / "two.pt")],
        [sys.executable, script, photos_file, str(tmp_path / "one.pt")],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    assert two["metadata"]["recipe"] == one["metadata"]["recipe"]
    state = two["state"]["decoder"]
    for k, v in one["state"]["decoder"].items():
        torch.testing.assert_close(state[k], v, rtol=RTOL, atol=ATOL, msg=k)
    # and they did move (the comparison is not of two initializations)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        from pyinvert.decoders import Decoder

        init = Decoder.for_representation("hog", width=4).state_dict()
    assert not torch.allclose(init["head.1.weight"], state["head.1.weight"])


def test_batch_must_divide_between_processes():
    from pyinvert.training.distributed import World, share

    assert share(8, World(size=2)) == 4
    with pytest.raises(ValueError, match="train: expected batch_size .* divisible by the 2"):
        share(5, World(size=2))
