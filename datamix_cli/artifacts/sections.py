"""The manifest's sections as types: what every reader of a split folder may rely on.

The JSON Schema (manifest.schema.json) validates them on every write and read; these TypedDicts say the same
for the code, and a test fails when the two disagree (tests/artifacts). docs/manifest.md explains each field.
``training`` is free-form in the schema (it grows with the fine-tuning options), typed here by what datamix writes.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class TensorSpec(TypedDict):
    name: str
    shape: list[int]  # -1 for a free batch dimension
    dtype: str
    bytes_per_sample: NotRequired[int]  # on the wire: the codec's payload and its parameters
    codec: NotRequired[str]  # fp32 | fp16 | int8 (schema 2; absent: fp32)
    values_per_sample: NotRequired[int]
    params: NotRequired["ParamsSpec"]  # int8: the (scale, zero point) tensor sent beside the payload


class ParamsSpec(TypedDict):
    name: str
    shape: list[int]
    dtype: str


class PreprocessingSection(TypedDict):
    preset: str
    resize: int | None
    crop: list[int] | None
    scale: str
    mean: list[float] | None
    std: list[float] | None
    channel_order: str
    edge_input: str
    normalisation_in_head: bool


class ModelSection(TypedDict):
    name: str
    source: str
    weights: NotRequired[str | None]
    factory_kwargs: NotRequired[dict]
    sha256: str
    input_shape: list[int]
    dtype: str
    normalisation: str
    preprocessing: NotRequired[PreprocessingSection]
    class_labels: list[str]
    num_classes: int


class SplitSection(TypedDict):
    head_cut: str
    tail_cut: str
    cut_features: NotRequired[str]
    head_negative_share: NotRequired[float | None]
    uplink: TensorSpec
    downlink: TensorSpec
    bottleneck: NotRequired[BottleneckRecord | None]  # schema 2
    uplink_search: NotRequired[dict]  # --max-uplink-bytes: the limit, every candidate tried, the one chosen
    objective: NotRequired[dict]  # --objective/--link: the link, the chosen and the FLOPs budget's cut, their estimates


class BottleneckRecord(TypedDict):
    channels: int
    stride: int
    cut_shape: list[int]
    code_shape: list[int]
    encoder_flops: int
    decoder_flops: int
    init: str


class DecoysRecord(TypedDict):
    path: str
    count: int


class CodecsRecord(TypedDict):
    uplink: str
    downlink: str


class ProtocolSection(TypedDict):
    name: str
    version: int
    k: int
    distribution: str
    alpha: float
    kappa_max: float
    decoys: DecoysRecord
    shuffle: bool
    noise_sigma: float
    noise_relative: NotRequired[float]
    mix: str
    demix: str
    seeded: bool
    codecs: NotRequired[CodecsRecord]


class FlopsSection(TypedDict):
    rule: str
    total: int
    head: int
    cloud: int
    tail: int
    mix: int
    demix: int
    edge: int
    edge_fraction: float
    uncounted_ops: dict[str, int]
    bottleneck: NotRequired[dict[str, int]]  # schema 2: encoder (counted in head) and decoder (in cloud) FLOPs


class AccuracySection(TypedDict):
    dataset: str
    n: int
    eval_seed: int | None
    original: float | None
    split_without_mixing: float | None
    naive_mixing: float | None
    bottleneck_before_finetuning: NotRequired[float]  # the PCA-initialised bottleneck under mixing, before fine-tuning
    mixing_aware: float | None


class ArtifactRecord(TypedDict):
    path: str
    format: str
    role: str  # head, cloud or tail
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_abs_error: float
    tolerance: float
    agreement: NotRequired[dict]  # formats verified by agreement (the fp16 and int8 ones): top-1 agreement of the edge chain


class FileRecord(TypedDict):
    path: str
    sha256: str
    role: str  # decoys or test_vectors


# The section of the manifest each type describes, for the test that keeps them and the schema in step.
SECTIONS = {"model": ModelSection, "split": SplitSection, "protocol": ProtocolSection, "flops": FlopsSection,
            "accuracy": AccuracySection, "artifacts": ArtifactRecord, "files": FileRecord}
