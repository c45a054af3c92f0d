"""The evaluation tests reuse the curation fixtures (the small world and its variant candidates)."""

from tests.pipelines.preference_curation.conftest import variant_candidates, world_tables  # noqa: F401
