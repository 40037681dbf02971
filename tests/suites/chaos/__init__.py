"""`make chaos`: jobs under worker kills, a SIGTERM and a frozen worker; then an audit of every
job, its stored stream, the followed WebSocket streams and the dead-letter queue."""
