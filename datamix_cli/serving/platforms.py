"""The platform name of each cloud artifact format, as Triton names its backends: what ``datamix serve`` reports
in its model metadata and what a Triton repository's ``config.pbtxt`` declares. Formats Triton has no backend for
keep a datamix name."""

PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "pt2": "pytorch_export", "aoti": "torch_aoti"}
