"""The ``[distributed]`` recipe section. Data-parallel training (DDP) launched with torch.distributed.run."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from workbench.recipe.base import Section

SECTION = "distributed"


class DistributedSection(Section):
    nproc_per_node: int = Field(2, ge=1, le=256, description="Processes (ranks) per machine; usually one per GPU.")
    nnodes: int = Field(1, ge=1, le=4096, description="Machines taking part.")
    node_rank: int = Field(0, ge=0, description="This machine's index (0 records the run).")
    rdzv_endpoint: str = Field("127.0.0.1:29500", description="host:port where the machines meet (node 0's "
                               "address for several machines).")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto = nccl on CUDA, gloo on CPU.")
    threads_per_process: int = Field(0, ge=0, le=1024, description="torch threads per rank (0 = the cores this "
                                     "machine leaves free, shared between its ranks).")

    @field_validator("rdzv_endpoint")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.\-\[\]:]+:\d{1,5}", v):
            raise ValueError("must be host:port, e.g. 127.0.0.1:29500")
        return v

    @model_validator(mode="after")
    def _node_rank_in_range(self) -> DistributedSection:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"distributed.node_rank = {self.node_rank} must be below nnodes = {self.nnodes}")
        return self


SECTION_MODEL = DistributedSection


def label(section: DistributedSection) -> str:
    """What a run with this section is called in tables and charts."""
    return f"ddp{section.nproc_per_node * section.nnodes}"
