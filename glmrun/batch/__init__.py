"""Batch: the only mode that keeps state between commands. What `<out>/.glmrun-batch/` keeps
(state), how a batch run is set up and what it reports (options), collecting the requests of
blocked conversations into batch rounds (collector), an ended batch's results (results), and
running, fetching, status and cancel as the CLI calls them (commands).

May import: errors, types, models, safety, load, plan, backends, run, output.
"""
