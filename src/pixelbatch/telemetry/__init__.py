"""What the processes tell their operator: Prometheus instruments, host classes, JSON logs.

Nothing here knows the database or the jobs; the routine, the finaliser and the webhook
delivery call ``instruments()`` after the database has recorded what they report, so a
counter says what the database says, once per image.
"""
