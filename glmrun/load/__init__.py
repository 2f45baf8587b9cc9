"""Load: files in, validated specs out. YAML with source positions and hostile-input limits
(yamlfile), the JSON Schema and its errors as Problems (schema), merged conversation specs
(spec), case tables (cases), project defaults and the .env key (project), `python:` hooks and
checks (pyload).

May import: errors, safety.
"""
