"""Plan: specs in, runs out. Conversations x cases x repeats x models become `RunPlan`s with
stable ids (plans), rendered through the Jinja2 sandbox (templating; its bounds: sandbox) with local media inlined
(media) and Zhipu's value rules applied (sendrules); `--shard K/N` picks a job's slice (shards).

May import: errors, types, models, safety, load, checks.
"""
