"""glmrun: run conversations with Zhipu AI's GLM models declared in YAML files."""

__version__ = "0.1.0"
