"""How many chips one scoring forward pass takes (validation and test chips, teachers and students).

No rasterio or typer: this runs on the GPU machine too.
"""
from __future__ import annotations

#: the most pixels one forward pass takes on the CPU: one 256 px chip (a bigger chip goes alone)
CPU_FORWARD_PIXELS = 256 * 256


def chips_per_forward(device: str, requested: int, height: int, width: int) -> int:
    """Chips of ``height`` x ``width`` px per forward pass when scoring on ``device``: ``requested``
    on a GPU; on the CPU at most :data:`CPU_FORWARD_PIXELS` worth of them (at least one).

    Why: on the CPU 8 chips of 256 px per forward made each full-resolution activation of the
    AttResUNet 64 MB (8 x 32 channels x 256 x 256 x 4 B) or more, above glibc's largest mmap threshold
    (32 MB): every one was mapped afresh and page-faulted in, a third of the time went to the kernel
    (0.30 s of system time per chip against 0.005 s one chip at a time) and scoring Dubai's 225 val
    chips took 2.5 minutes. In eval mode a chip's output does not depend on its batch (batch norm
    uses its running statistics), so the scores are the same."""
    if not device.startswith("cpu"):
        return max(1, requested)
    return max(1, min(requested, CPU_FORWARD_PIXELS // max(1, height * width)))
