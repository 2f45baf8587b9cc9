"""The command line: click commands that parse, call `glmrun.api` and map errors to exit codes
(main), and `glmrun init` (scaffold).

May import: errors, types, models, safety, load, plan, checks, backends, run, output, batch,
report, mock, api.
"""
