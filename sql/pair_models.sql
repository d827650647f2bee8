-- Which models used this pair (--param pair_id=…), as training or evaluation data, and from which snapshot.
SELECT m.model_id, m.job_kind, t.split, m.base_model, m.snapshot_hash, m.status, m.output_path, m.created_at
FROM training_pairs t
JOIN models m USING (model_id)
WHERE t.pair_id = $pair_id
ORDER BY m.created_at;
