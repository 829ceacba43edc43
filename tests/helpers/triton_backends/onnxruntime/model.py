"""Stand-in for Triton's onnxruntime backend: runs <version>/model.onnx (see ../README.md)."""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if graph_inputs != self.inputs:  # the real backend refuses a config that names tensors the graph lacks
            raise pb_utils.TritonModelException(f"config inputs {self.inputs} != ONNX graph inputs {graph_inputs}")

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            results = self.session.run(self.outputs, feed)
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(r)) for name, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
