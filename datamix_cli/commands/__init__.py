"""One module per command group; each parses options and makes one library call."""
