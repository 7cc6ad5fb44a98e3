"""Access control: API keys that belong to tenants, signed output URLs, upload rate limits."""
