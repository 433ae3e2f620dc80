"""Real-time sales analytics over the event topics, and the analysts' dashboard."""
