"""Long-running instruments against the whole local stack, one command each (`make chaos`,
`make fuzz`). They report what they see and exit non-zero on a broken guarantee; they are not
part of `make test`."""
