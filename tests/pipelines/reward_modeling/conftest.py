"""The reward tests reuse the curation fixtures (variant candidates of the small world)."""

from tests.pipelines.preference_curation.conftest import variant_candidates, world_tables  # noqa: F401
