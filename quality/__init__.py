"""Data-quality gates and the pre-DPO report: not built yet, see the open issue."""
