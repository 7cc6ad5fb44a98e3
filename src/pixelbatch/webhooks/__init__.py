"""Signed webhook delivery with retries (Standard Webhooks style)."""
