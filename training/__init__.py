"""Training jobs on lake snapshots (reward model, DPO): not built yet, see the open issue."""
