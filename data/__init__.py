"""Data loaders and generators: the ``gtsegs_ijcv.mat`` reader/writer (SPEC section 4), the ImageNet
folder reader (SPEC section 5), and the procedural embedded defaults (SPEC section 8)."""
