"""Products and prices; publishes every change to the compacted catalog topic."""
