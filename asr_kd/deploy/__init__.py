"""Deployment: the distilled model as a product.

package.py (self-contained model dir, checksummed), transcribe.py (audio -> words with times;
`load_model(PKG).transcribe("a.wav")`), export.py (TorchScript, ONNX, int8), evaluate.py (frame
accuracy and WER of a package backend). Sits on top of data, nnet and decode; nothing below
imports it.
"""
