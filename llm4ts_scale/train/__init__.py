"""Training: the Accelerator (DeepSpeed ZeRO over gloo or nccl), one stage's loop, and the stage manager."""
