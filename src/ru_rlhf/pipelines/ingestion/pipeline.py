"""Wiring of the ingestion pipeline."""

from kedro.pipeline import Node, Pipeline

from ru_rlhf.pipelines.ingestion import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Corpus rows → quarantine or documents → facts, splits, prompts, demonstrations, summary."""
    return Pipeline(
        [
            Node(nodes.normalise_documents, "raw_corpus", "normalised_corpus", name="normalise_documents"),
            Node(nodes.validate_documents, ["normalised_corpus", "params:ingestion"],
                 ["valid_documents", "schema_quarantine"], name="validate_documents"),
            Node(nodes.deduplicate_documents, ["valid_documents", "params:ingestion"],
                 ["documents", "dedup_quarantine"], name="deduplicate_documents"),
            Node(nodes.collect_quarantine,
                 ["raw_corpus", "documents", "schema_quarantine", "dedup_quarantine"],
                 "document_quarantine", name="collect_quarantine"),
            Node(nodes.split_documents, ["documents", "params:ingestion"], "doc_splits",
                 name="split_documents"),
            Node(nodes.build_facts, ["documents", "world_facts"], "facts", name="build_facts"),
            Node(nodes.build_prompts, ["documents", "facts", "doc_splits", "params:ingestion"], "prompts",
                 name="build_prompts"),
            Node(nodes.build_demonstrations, ["prompts", "params:ingestion"], "demonstrations",
                 name="build_demonstrations"),
            Node(nodes.summarise_ingestion,
                 ["raw_corpus", "documents", "document_quarantine", "doc_splits", "prompts", "demonstrations"],
                 "ingestion_summary", name="summarise_ingestion"),
            Node(nodes.plot_ingestion, "ingestion_summary", "ingestion_plot", name="plot_ingestion"),
        ]
    )
