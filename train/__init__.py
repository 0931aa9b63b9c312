"""DINOv2 pretraining: ViT, heads, losses, schedules, checkpoints and the torchrun training loop."""
