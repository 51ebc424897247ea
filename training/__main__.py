"""`python -m training ...` runs `alexnet train` (same flags), which is what torchrun starts:

    torchrun --standalone --nproc_per_node=2 -m training --data digits --out runs/digits-ddp

torchrun sets RANK/LOCAL_RANK/WORLD_SIZE; the loop joins the process group (NCCL on GPUs, gloo on CPUs).
"""

import typer

from common.cli import run
from training.cli import train

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(train)

if __name__ == "__main__":
    run(app)
