#!/usr/bin/env python3
"""Reference speed of data-parallel MoCo-v2 + geo-head pretraining in PyTorch:
the step of ../shared/bench/torch_reference.py (imported from there, not
copied) under DistributedDataParallel, as the authors' moco/main_moco.py and
moco/builder.py run it. Launch it with torchrun; Gloo on CPU, NCCL on CUDA
(cuda:LOCAL_RANK).

  torchrun --nproc-per-node 2 bench/torch_ddp_reference.py --arch resnet18 --batch 32 --threads 1

--batch is the GLOBAL batch (each rank encodes batch / world), as geossl's
--batch-size. What differs from the single-process reference is MoCo's
cross-rank machinery, exactly as moco/builder.py does it: the key images are
gathered from every rank (concat_all_gather), shuffled by a permutation drawn
on rank 0 and broadcast, each rank encodes its slice of the shuffled global
batch with its own BatchNorm statistics (shuffle-BN across ranks), the keys
are gathered again and unshuffled, and the queue is fed with every rank's
keys. Inputs are random tensors already on the device (this times the model
step, not the data pipeline); each rank takes its contiguous slice of one
global batch drawn from seed 0.

--grad-sync chooses how gradients are averaged:
  ddp        DDP's Reducer: bucketed all-reduces overlapped with backward
             (the default, what PyTorch users run);
  allreduce  backward under ddp.no_sync(), then one all-reduce of all
             gradients flattened into one buffer, divided by the world size
             (what geossl does);
  none       no averaging at all: the step without gradient communication,
             i.e. the floor both of the above approach.
DDP's broadcast_buffers is off unless --broadcast-buffers (main_moco.py leaves
it on, which re-broadcasts every BatchNorm buffer and the queue from rank 0
at each forward; geossl keeps per-rank BatchNorm statistics, as SyncBN-free
MoCo does, and a queue that is identical on all ranks by construction).

--allreduce-only times just the all-reduce of one flat float32 buffer the
size of the model's trainable parameters (query encoder + geo head), i.e. the
gradient exchange of one step when nothing overlaps it.

Prints on rank 0, one line, in the form bench scripts parse:
  REFERENCE_DDP arch=resnet18 world=2 ... median_ms=... pairs_per_s=...
  REFERENCE_ALLREDUCE arch=resnet18 world=2 floats=... median_ms=...
"""
import argparse
import importlib.util
import os
import pathlib
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel


def load_reference(path):
    """The single-process reference module (torch_reference.py): `path`
    (--reference, else $TORCH_REFERENCE as in bench/gpu.sh), else the one next
    to this script (bench/gpu-prepare.sh packs them together), else
    ../shared/bench/torch_reference.py beside the repository."""
    here = pathlib.Path(__file__).resolve().parent
    path = path or os.environ.get("TORCH_REFERENCE")
    candidates = [pathlib.Path(path)] if path else [here / "torch_reference.py",
                                                     here.parent.parent / "shared" / "bench" / "torch_reference.py"]
    for candidate in candidates:
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("torch_reference", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    sys.exit(f"torch_ddp_reference.py: no torch_reference.py at {', '.join(map(str, candidates))} (use --reference PATH)")


@torch.no_grad()
def concat_all_gather(tensor):
    """moco/builder.py's concat_all_gather: every rank's tensor, in rank
    order, concatenated along dim 0 (no gradient flows through it)."""
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, 0)


@torch.no_grad()
def batch_shuffle_ddp(x):
    """moco/builder.py's _batch_shuffle_ddp: this rank's slice of the global
    batch shuffled by a permutation drawn on rank 0, and the inverse."""
    gathered = concat_all_gather(x)
    ranks = gathered.shape[0] // x.shape[0]
    shuffle = torch.randperm(gathered.shape[0], device=x.device)
    dist.broadcast(shuffle, src=0)
    unshuffle = torch.argsort(shuffle)
    return gathered[shuffle.view(ranks, -1)[dist.get_rank()]], unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x, unshuffle):
    """moco/builder.py's _batch_unshuffle_ddp."""
    gathered = concat_all_gather(x)
    ranks = gathered.shape[0] // x.shape[0]
    return gathered[unshuffle.view(ranks, -1)[dist.get_rank()]]


def ddp_model_class(reference):
    class MocoGeoDDP(reference.MocoGeo):
        """The reference's MoCo + geo model with moco/builder.py's
        cross-rank key shuffle and a queue fed with every rank's keys."""

        def forward(self, im_q, im_k, geo_labels):
            q_raw = self.q(im_q)
            q = F.normalize(q_raw, dim=1)
            with torch.no_grad():
                self.momentum_update()
                im_k, unshuffle = batch_shuffle_ddp(im_k)
                k = batch_unshuffle_ddp(F.normalize(self.k(im_k), dim=1), unshuffle)
            l_pos = (q * k).sum(1, keepdim=True)
            l_neg = q @ self.queue.clone().detach()
            logits = torch.cat([l_pos, l_neg], 1) / self.t
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            loss = F.cross_entropy(logits, target) + F.cross_entropy(self.geo(q_raw), geo_labels)
            self.enqueue(concat_all_gather(k))
            return loss

    return MocoGeoDDP


def average_gradients_coalesced(params):
    """One all-reduce of every gradient flattened into one buffer, then /world
    (torch's _flatten_dense_tensors / _unflatten_dense_tensors)."""
    grads = [p.grad for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, averaged in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(averaged)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch", type=int, default=32, help="global batch, split over the ranks")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--geo-classes", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.02)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per rank (0: torch default)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--grad-sync", choices=["ddp", "allreduce", "none"], default="ddp")
    p.add_argument("--broadcast-buffers", action="store_true")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP's bucket size (torch default 25)")
    p.add_argument("--allreduce-only", action="store_true")
    p.add_argument("--reference", help="path of torch_reference.py (default: $TORCH_REFERENCE, see load_reference)")
    return p.parse_args()


def setup(a):
    """The process group as torch.distributed.init_process_group does it
    under torchrun; returns (rank, world, device)."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        if var not in os.environ:
            sys.exit(f"torch_ddp_reference.py: {var} is not set: launch it with torchrun")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("torch_ddp_reference.py: --device cuda but torch sees no CUDA device")
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def time_steps(a, n, step, device):
    times = []
    for i in range(a.warmup + n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def allreduce_only(a, reference, world, device):
    model = reference.MocoGeo(a.arch, a.dim, a.queue, 0.999, a.temperature, a.geo_classes)
    floats = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flat = torch.ones(floats, device=device)
    times = time_steps(a, a.steps, lambda: dist.all_reduce(flat), device)
    return (f"REFERENCE_ALLREDUCE arch={a.arch} world={world} floats={floats} mib={floats * 4 / 2**20:.1f} "
            f"device={a.device} threads={torch.get_num_threads()} torch={torch.__version__} "
            f"median_ms={statistics.median(times):.1f} min_ms={min(times):.1f}")


def train_steps(a, reference, rank, world, device):
    if a.batch % world:
        sys.exit(f"torch_ddp_reference.py: --batch {a.batch} is not divisible by the world size {world}")
    local = a.batch // world
    torch.manual_seed(0)
    model = ddp_model_class(reference)(a.arch, a.dim, a.queue, 0.999, a.temperature, a.geo_classes)
    mf = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=mf).train()
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  broadcast_buffers=a.broadcast_buffers, bucket_cap_mb=a.bucket_cap_mb)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    mine = slice(rank * local, (rank + 1) * local)
    im_q = torch.randn(a.batch, 3, a.size, a.size)[mine].to(device).to(memory_format=mf)
    im_k = torch.randn(a.batch, 3, a.size, a.size)[mine].to(device).to(memory_format=mf)
    geo = torch.randint(0, a.geo_classes, (a.batch,))[mine].to(device)
    last = {}

    def step():
        sync = ddp.no_sync() if a.grad_sync != "ddp" else torch.enable_grad()
        with sync:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.amp):
                loss = ddp(im_q, im_k, geo)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        if a.grad_sync == "allreduce":
            average_gradients_coalesced(params)
        opt.step()
        last["loss"] = loss.item()

    times = time_steps(a, a.steps, step, device)
    med = statistics.median(times)
    return (f"REFERENCE_DDP arch={a.arch} world={world} batch={a.batch} per_rank={local} size={a.size} "
            f"queue={a.queue} device={a.device} backend={dist.get_backend()} grad_sync={a.grad_sync} "
            f"broadcast_buffers={int(a.broadcast_buffers)} amp={int(a.amp)} channels_last={int(a.channels_last)} "
            f"threads={torch.get_num_threads()} torch={torch.__version__} loss={last['loss']:.4f} "
            f"median_ms={med:.1f} min_ms={min(times):.1f} pairs_per_s={a.batch * 1e3 / med:.1f}")


def main():
    a = parse_args()
    reference = load_reference(a.reference)
    rank, world, device = setup(a)
    try:
        if a.allreduce_only:
            line = allreduce_only(a, reference, world, device)
        else:
            line = train_steps(a, reference, rank, world, device)
        if rank == 0:
            print(line, flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
