"""Stand-in for Triton's pytorch (libtorch) backend: runs <version>/model.pt (see ../README.md).

Follows the libtorch backend's naming convention: inputs INPUT__<i> are the
forward arguments in order, outputs OUTPUT__<j> the returned tensors in order.
"""

import json
import os

import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.pt"
        self.module = torch.jit.load(os.path.join(args["model_repository"], args["model_version"], filename), map_location="cpu").eval()
        torch.set_num_threads(1)
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        for kind, names in (("INPUT", self.inputs), ("OUTPUT", self.outputs)):
            if names != [f"{kind}__{i}" for i in range(len(names))]:
                raise pb_utils.TritonModelException(f"libtorch tensors must be named {kind}__0, {kind}__1, ...; got {names}")

    def execute(self, requests):
        responses = []
        for request in requests:
            args = [torch.from_numpy(pb_utils.get_input_tensor_by_name(request, n).as_numpy().copy()) for n in self.inputs]
            with torch.inference_mode():
                result = self.module(*args)
            results = result if isinstance(result, (tuple, list)) else (result,)
            tensors = [pb_utils.Tensor(n, r.contiguous().numpy()) for n, r in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
