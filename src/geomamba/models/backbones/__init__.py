"""Feature extractors shared by the change and segmentation models.

Each backbone maps ``(B, C_in, H, W)`` to a list of channels-first feature maps (strides in its
``strides`` attribute, channels in ``out_channels``) and declares how a pretrained file maps onto it
(``pretrained_ignore``: file keys to drop, ``pretrained_input_conv``: the first conv, adapted to any band
count), used by :func:`geomamba.models.pretrained.load_backbone_weights`.

- ``resnet.ResNetBackbone``: torchvision ResNet-18/34/50 trunk (torchvision state-dict keys).
- ``mit.MixTransformer``: SegFormer-style hierarchical transformer (MiT-b0/b1 configurations,
  official MiT key names).
- ``vmamba.VMambaBackbone``: VMamba-style stages of ``geomamba.layers.vss_block.VSSBlock``.
"""
