"""Serving a split: the Open Inference Protocol codec, the cloud server, the edge client, loopback, deployment."""
