"""The network and its weights: the U-Net and its pretrained encoder, losses, inference, the released model."""
