"""The audit tests reuse the curation fixtures (the small world)."""

from tests.pipelines.preference_curation.conftest import variant_candidates, world_tables  # noqa: F401
