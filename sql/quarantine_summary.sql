-- What was rejected, by source, level, kind and rule, with one example reason each.
SELECT source, level, kind, rule, count(*) AS n, any_value(reason) AS example_reason
FROM quarantine
GROUP BY ALL
ORDER BY source, n DESC, rule;
