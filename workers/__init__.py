"""Background workers: conversation turns, compaction and titles run through a model provider."""
