"""Plan: specs in, runs out. Conversations x cases x repeats x models become `RunPlan`s with
stable ids (plans), rendered through the Jinja2 sandbox (templating) with local media inlined
(media) and Zhipu's value rules applied (sendrules); `--shard K/N` picks a job's slice (shards);
warnings such as a model name close to a known one (hints).

May import: errors, types, models, safety, load, checks.
"""
