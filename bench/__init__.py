"""`make bench`: the platform under open-loop load, next to a monolith and the raw transport."""
