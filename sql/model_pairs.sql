-- Which pairs trained this model (--param model_id=…): every pair with its split, source, iteration and provenance.
SELECT t.model_id, t.split, p.pair_id, p.source, p.iteration, p.hub_id, p.split AS source_split, p.raw_keys, p.rule_version, p.run_id
FROM training_pairs t
JOIN pairs p USING (pair_id)
WHERE t.model_id = $model_id
ORDER BY t.split DESC, p.source, p.pair_id;
