"""research/slim's `deployment` package: `model_deploy` (clones)."""
