"""Batch: the only mode that keeps state between commands. Collecting batch-mode requests into
JSONL files, submitting, polling, fetching and resuming (`glmrun batch ...`).

May import: errors, types, models, safety, load, plan, backends, run, output.
"""
