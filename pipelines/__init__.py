"""prefhouse pipelines: storage (``core``), curation (``sources``, ``curate``), the online iteration
(``online``, ``run_iteration``) and the entry points (``cli``, ``run_loop``, ``sql``, ``maintain``)."""
