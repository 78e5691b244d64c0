"""torch.distributed for multi-GPU (or multi-process CPU/gloo) training.

StyleGAN2-ADA-style explicit gradient all-reduce instead of DDP: the generator and
discriminator updates alternate and the neural textures are sampled per scene, both of which
trip DDP's bucket/unused-parameter machinery. Every rank computes its own batch; before each
optimizer step the gradients of that optimizer's parameters are averaged across ranks, so
all ranks take identical steps and stay in sync (checked at the end of training).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env(device_type: str) -> "Dist":
        """Join the process group torchrun describes (WORLD_SIZE > 1); a single process otherwise."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Dist()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's weights."""
        if self.enabled:
            with torch.no_grad():
                for t in list(module.parameters()) + list(module.buffers()):
                    dist.broadcast(t.data, src=0)

    def all_reduce_grads(self, params: list[torch.Tensor]) -> None:
        """Average gradients across ranks (missing gradients count as zero)."""
        if not self.enabled or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        i = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[i:i + n].view_as(p).clone()
            i += n

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def check_in_sync(self, module: torch.nn.Module) -> bool:
        """True when all ranks hold bit-identical parameters."""
        h = hashlib.sha256()
        for p in module.parameters():
            h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests = self.gather(h.hexdigest())
        return len(set(digests)) == 1

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
