"""The bottom layer every other imports: the lake (Delta tables), table schemas, content ids, text predicates,
the run log, the read-only SQL runner, settings and presets, and the two kinds of error. It imports nothing
of the project above it."""
