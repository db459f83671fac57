"""Training: batches, the forward/loss step, optimizer and schedule, metrics, the loop."""
