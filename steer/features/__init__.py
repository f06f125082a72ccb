"""Find and name SAE features: the feature index, search, contrast, labels and dashboard."""
