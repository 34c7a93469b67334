"""Gradient averaging whose float sums do not depend on DDP's bucket layout.

DDP packs gradients into buckets and all-reduces each bucket as one flat buffer; a ring
all-reduce adds the ranks' values in an order set by each element's position in that
buffer. A fresh process reduces its first step in DDP's initial layout and rebuilds the
buckets afterwards, so a run resumed from a checkpoint sums one step in a different
order than the uninterrupted run did: with more than two ranks the weights then differ
in the last bits. Reducing every gradient as its own tensor makes each element's order a
function of that tensor alone, the same in every process: ``train.deterministic`` turns
this on (at the cost of one collective per parameter instead of one per bucket).
"""

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING or dist.is_available():
    from torch._C._distributed_c10d import GradBucket  # dist.GradBucket, under its own name
    from torch.distributed import ProcessGroup
else:  # a torch built without distributed: no hook is registered, the module still imports
    GradBucket = ProcessGroup = object


def per_tensor_allreduce(
    group: ProcessGroup | None, bucket: GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """A DDP communication hook: average each gradient of the bucket separately."""
    # (no `from __future__ import annotations` in this module: DDP checks the bucket and
    # return annotations at runtime, against dist.GradBucket and Future[Tensor])
    world = dist.get_world_size(group)
    grads = [g.div(world) for g in bucket.gradients()]
    works = [dist.all_reduce(g, group=group, async_op=True) for g in grads]

    def gather(_: torch.futures.Future[None]) -> torch.Tensor:
        for w in works:
            w.wait()
        return torch.cat([g.reshape(-1) for g in grads])

    done: torch.futures.Future[None] = torch.futures.Future()
    done.set_result(None)
    return done.then(gather)


def use_layout_independent_sync(ddp_module: "torch.nn.parallel.DistributedDataParallel") -> None:
    ddp_module.register_comm_hook(dist.group.WORLD, per_tensor_allreduce)
