"""The prepared GPU check: every GPU path this project has that a bare GPU machine can run, in one command.

    make gpu-check                                    # = PYTHONPATH=. python3 -m gpu_check
    OUT=/some/folder make gpu-check                   # gpu_check.json and gpu_check.log go there
    make gpu-check ARGS='--inject-fault swap-channels'   # prove that the comparisons can fail

On a machine with a CUDA GPU it measures and checks, each part within its own time budget and all of it
within --budget-s (420 s by default):
- the JPEG decode of the data path on the GPU (torchvision.io.decode_jpeg) against the CPU's (Pillow);
- the real training loop on the real data path (a folder of JPEGs, decoded by DataLoader workers): scikit-
  learn's digits, trained until the model is confident, checkpointed, resumed for a last epoch; a run
  started on the CPU resumed on the GPU with channels_last; DDP over NCCL at world size 1;
- the exported network's PyTorch twin (uint8 pixels in) on the GPU: FP32 with TF32 off and on, bf16
  autocast, a CUDA graph and torch.compile at batch 1/64/256, against CPU FP32 on real images (digits and
  two colour photographs): logits within a bound relative to their spread, and the same top-1;
- the ONNX export of that model and ONNX Runtime against PyTorch FP32 on the same images (and on the GPU
  where onnxruntime-gpu is installed); a TensorRT engine where TensorRT is installed;
- training throughput of both architectures at 224 px, batch 256: FP32, bf16 autocast + channels_last, and
  that with torch.compile (images/s after the warm-up, peak memory).
What the machine lacks (TensorRT, onnxruntime-gpu, tritonclient, Triton, Gradio, a C compiler for
torch.compile) is skipped with the reason. Without a GPU the same command runs a tiny CPU version of the
same code, which the test suite runs, so the check never rots. `--inject-fault` plants a known bug in the
compared side (a swapped channel order, a wrong mean, a CUDA graph replaying a stale input) and the check
must then fail, naming what disagreed. docs/gpu.md has more.

Only torch, torchvision, numpy, Pillow, scikit-learn, onnx, onnxscript, onnxruntime and safetensors are
needed: nothing here imports tritonclient, Triton or Gradio unless they are installed.
"""
