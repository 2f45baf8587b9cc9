"""Checks: the expectation kinds a conversation declares. The registry (registry.py) names each
kind with its options and runs a turn's items; one module per family holds the checks: text,
structured (JSON, tool calls), behaviour (finish, timing, tokens, Zhipu's citations and content
filter), python (the suite's own) and judge (a model grades the reply).

May import: errors, types, load.
"""
