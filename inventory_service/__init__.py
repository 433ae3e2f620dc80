"""Stock and reservations: reserve all lines or none, commit, release, expire."""
