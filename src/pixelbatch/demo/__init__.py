"""An offline demo: a generated example catalog served from a local image server."""
