"""What ``datamix profile`` and ``datamix split`` orchestrate: profile, split, the export loop, the manifest sections."""
