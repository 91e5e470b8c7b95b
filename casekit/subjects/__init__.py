"""What is explained: models and the images they see.

The demo profile's procedural benchmark (:mod:`.synthetic`), its trained model zoo (:mod:`.zoo`) and the
``ck.demo`` entry points (:mod:`.demo`); the paper's torchvision models (:mod:`.models`) and datasets
(:mod:`.data`); the CIFAR-100 fine-tuning of DenseNet-201 (:mod:`.finetune`); the pretrained CIFAR-10
reference networks and images of the cifar10 profile (``ck.reference``, :mod:`.reference`, architectures in
:mod:`.cifar_nets`); finding and downloading external inputs listed in ``data/manifest.json`` (:mod:`.fetch`).

Imports: :mod:`casekit.cam` and :mod:`casekit._io`, torch, torchvision — never the study or report rooms.
"""
