"""glmrun: run conversations with Zhipu AI's GLM models declared in YAML files."""

__version__ = "0.1.0"
REPOSITORY = "https://github.com/glmrun/glmrun"  # also pyproject's [project.urls] and the $ids
