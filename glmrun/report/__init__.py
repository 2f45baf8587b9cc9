"""HTML reports of runs: `glmrun report OUT`, `glmrun report OLD NEW`, `glmrun view OUT`.

data.py reads a run folder (its run.json, else its transcripts) into plain data; html.py
renders it with the templates in templates/ and the inline assets in assets/; serve.py
serves the same page on 127.0.0.1.

May import: errors, types, safety, output.
"""
