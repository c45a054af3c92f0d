"""Typed parameters of the ethics_audit pipeline (``ethics_audit`` in ``conf/base/parameters_ethics_audit.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ru_rlhf.params import Params


class AuditParams(Params):
    """Typed parameters of the ethics_audit pipeline (``parameters_ethics_audit.yml``)."""

    seed: int
    bias_policy_pairs: int = Field(gt=0)  # pairs the policies answer (all pairs go through the RM)
    sycophancy_items: int = Field(gt=0)
    max_new_tokens: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    alpha: float = Field(gt=0, lt=1)
    # how the p-values of a report's family of tests are corrected: Benjamini–Hochberg (false discovery rate,
    # for the screens of many bias groups) or Holm (family-wise error)
    correction: Literal["bh", "holm"] = "bh"  # not in the YAML
    hacking_responses: int = Field(gt=0)
    # the over-optimisation curves and the reward–KL frontier are measured by the alignment pipeline
    # (alignment.frontier); the audit reads them through the catalog
