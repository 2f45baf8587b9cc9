"""Output: what a run leaves behind. Transcripts: their JSON form and reading them back
(transcript), their Markdown view (markdown), the thread that writes both (writer); the run's
summary rows (summary), run.json (manifest), JUnit XML (junit), run-to-run comparison (diff),
the per-model table (matrix), live progress on the terminal (progress), `glmrun merge`
(merge), and what `--estimate` prints (estimate).

May import: errors, types, models, safety, plan.
"""
