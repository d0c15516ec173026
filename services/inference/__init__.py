"""The inference worker: DnCNN denoising served like Triton / KServe v2.

models/            the model repository (ONNX + config.json per <name>/<version>), converted from
                   scico's pretrained weights by convert.py and checked against reference.py
repository.py      reads configs; models.py loads, warms up, unloads (explicit model control)
runner.py          onnxruntime sessions (CUDA when available, else CPU)
batcher.py         dynamic batching per model (max batch size, max queue delay, concurrency)
tiling.py          overlapping tiles with a receptive-field halo, cross-faded seams
noise.py           wavelet-MAD σ estimate, luminance planes
selection.py       which model and σ for an operation (auto)
service.py         the pipeline; catalog.py the KServe-style views; api.py / consumers.py adapters
"""
