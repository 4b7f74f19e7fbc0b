"""Training augmentation: the recipe registry (``recipes``), each recipe's host reference in
PIL and numpy (``cifar_host``, ``imagenet_host``) and its device program in JAX
(``cifar_device``, ``imagenet_device``), which reproduces the host's arithmetic."""
