"""Data readers and generators: the ``gtsegs_ijcv.mat`` reader/writer (SPEC section 4), the ImageNet
folder reader (SPEC section 5), and the procedural data of the embedded defaults (SPEC section 8)."""
