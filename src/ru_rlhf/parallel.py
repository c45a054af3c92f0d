"""Inside one of several training processes: what the project's own training loops (PPO/REINFORCE, the reward
model) need to run under ``accelerate launch``.

Below :mod:`ru_rlhf.distributed`, which launches those processes and calls the loops: a loop imports this
module, never the launcher.
"""

from __future__ import annotations

import os


def accelerator():
    """An ``accelerate.Accelerator`` when this process is one of several under ``accelerate launch``
    (``WORLD_SIZE`` above 1), else ``None``: the set-up of the project's own loops (PPO/REINFORCE, the reward model).

    ``cpu=True`` without a GPU: accelerate then runs DDP over gloo (left to itself it finds no GPU and
    runs every rank as a separate single process). ``find_unused_parameters``: a step may leave some
    parameters without a gradient (REINFORCE never uses PPO's value head; a reward model's encoder's pooler).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator, DistributedDataParallelKwargs

    return Accelerator(cpu=not torch.cuda.is_available(),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
