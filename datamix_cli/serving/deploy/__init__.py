"""The cloud part on a production inference engine: a Triton model repository (``triton``) and a KServe
InferenceService pointing at it (``kserve``)."""
