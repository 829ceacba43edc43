"""A split folder on disk: the manifest type and schema, staged (atomic) output, and loading parts by role."""
