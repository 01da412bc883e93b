"""Data readers and generators: the one image-opening function (:mod:`palrp.data.images`), the ``gtsegs_ijcv.mat`` reader/writer (docs/protocols.md, section 1), the ImageNet
folder reader (docs/protocols.md, section 2), and the procedural data of the embedded defaults (docs/protocols.md, section 6)."""
