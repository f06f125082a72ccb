"""Honest evaluation of a steering recipe (``steer eval``): the recipe at several strengths
beside no steering, a prompting baseline and a difference-of-means vector, each with its
concept score (a pluggable judge), fluency, capability and throughput cost, and bootstrap
confidence intervals over prompts."""
