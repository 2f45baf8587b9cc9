"""Checks: the expectation kinds a conversation declares and the judge that grades them.

May import: errors, types, load.
"""
