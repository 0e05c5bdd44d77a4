"""The optimization engine shared by every task: recipes (pure data), update rules and the
loop, jitter, and the batched engine."""
