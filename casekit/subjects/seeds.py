"""The training seeds of the seed-robustness study (the paper's Figure 4): the demo zoo's DenseNets and the
fine-tuned CIFAR-100 DenseNet-201s are trained with each of these, and the study explains every one."""

TRAINING_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
