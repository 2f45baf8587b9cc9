"""The bounds of a render: how large what a template builds may grow, how long it may run.

The Jinja2 sandbox (sandbox) enforces them on every template; plain `{{ name }}` substitution
(templating) checks the two that apply to it. They live apart so that checking needs no Jinja2.
"""

from __future__ import annotations

MAX_SIZE = 2_000_000  # characters of a string, items of a list or mapping, a template may build
MAX_INT_BITS = 14_000  # ≈ 4,200 digits: Python prints integers up to 4,300
MAX_STEPS = 1_000_000  # loop iterations, calls, operators and lookups in one render
MAX_SECONDS = 5.0  # wall time of one render
