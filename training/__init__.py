"""Training jobs on lake snapshots: the reward model and DPO (TRL), their snapshots, lineage, stored reference
log-probabilities, reward scoring, and export of a snapshot in TRL's format. Layer: above quality (DPO refuses
a failed report), beside curation and the online stages, below the entry points."""
