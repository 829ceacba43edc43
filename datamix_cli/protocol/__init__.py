"""The DataMix protocol: mixing config, draws of C, mix/de-mix, noise, shuffle, decoys, edge modules, presets."""
