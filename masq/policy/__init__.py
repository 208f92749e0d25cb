"""Accept/refuse decisions: pure functions that return a Reply, or None to go on."""
