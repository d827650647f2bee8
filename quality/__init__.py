"""Data quality: facts derived from rows, Great Expectations suites over them, the gated writers every append
goes through (``guard``), and the report before a DPO round. Layer: above storage (pipelines/core), below
curation, the online stages and training."""
