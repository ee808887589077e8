"""What only vLLM's CPU backend needs: our vLLM plugin (``plugin.py``), the LoRA worker extension (``lora.py``)
and the placement of the processes off the worker's cores (``pinning.py``). Each leaves a GPU engine as shipped, so
a reader of the CUDA path can skip this package."""
