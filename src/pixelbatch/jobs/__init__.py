"""Turning pending images into stored outputs: one routine, several dispatchers."""
