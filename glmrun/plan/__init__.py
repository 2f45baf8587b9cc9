"""Plan: specs in, runs out. Conversations x cases x repeats x models become `RunPlan`s (plans)
with stable ids (ids), each case row rendered once into the request as sent (render) through
templates (templating: plain `{{ name }}` substituted there, the rest by Jinja2 in jinja) in a
bounded sandbox (sandbox, its limits in bounds), local media inlined (media) and
Zhipu's value rules applied (sendrules); `--shard K/N` picks a job's slice (shards); warnings
such as a model name close to a known one (hints).

May import: errors, types, models, safety, load, checks.
"""
