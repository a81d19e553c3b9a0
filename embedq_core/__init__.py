"""What the API and the workers share: settings, table definitions, job records, manifests.

This package imports no ML library, so the API can use it and still start fast.
"""
