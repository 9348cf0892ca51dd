"""Model inputs from disk, one module per job (import from the module that does it):

* :mod:`deploy_res.data.preprocess`: one image -> the model's float32 (C, H, W) as its manifest says;
* :mod:`deploy_res.data.images`: image folders, labelled folders, image lists (folder, glob, Parquet);
* :mod:`deploy_res.data.inputs`: ``.npy``/``.npz`` arrays and :func:`~deploy_res.data.inputs.load_inputs`,
  which picks the loader for a path;
* :mod:`deploy_res.data.photos`: scikit-image's shipped photos and seeded random crops of them.
"""
