"""Typed parameters of the publish pipeline (``publish`` in ``conf/base/parameters_publish.yml``).

The values live in the YAML; a field here has no default when the base YAML sets it, so the two cannot drift.
"""

from __future__ import annotations

from ru_rlhf.params import Params


class Bundle(Params):
    kind: str  # dataset | reward_model | policy
    source: str  # the catalog dataset whose saved folder the bundle publishes (sft_policy, alignment.dpo.policy, ...)
    method: str | None = None  # the policy's method (datasets and reward models have none)


class PublishParams(Params):
    """The folders themselves are catalog entries: ``publish_bundles`` (where they go) and each source's
    ``<dataset>_folder``."""

    hub_namespace: str
    repo_prefix: str
    license: str
    policy_tokenizer: str | None  # the catalog dataset whose files every policy's folder gets too
    bundles: dict[str, Bundle]
