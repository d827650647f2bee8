"""prefhouse pipelines: the lake, source adapters, curation and the SQL runner."""
