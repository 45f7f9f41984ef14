"""The scheduled rollout check (`functions.rollout.handler.handler`)."""
