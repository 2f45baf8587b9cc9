"""The command line: click commands that parse, call `glmrun.api` and map errors to exit codes.
The group, `glmrun PATH...` and `mock-server` (main), `run` (run), `validate` / `schema` /
`init` (suite, with scaffold writing the new suite), run folders' `merge` / `diff` / `report` /
`view` (results), `batch` (batch), and what they share (common).

May import: errors, types, models, safety, load, plan, checks, backends, run, output, batch,
report, mock, api.
"""
