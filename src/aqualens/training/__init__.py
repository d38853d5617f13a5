"""Training: dataset loading, augmentation, networks, the training loop, export and evaluation.

Use-case layer: imports catalog/, storage/, models/ and processing/, never api/ or cli/.
"""
