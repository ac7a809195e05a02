r"""Clothing1M (Xiao et al. 2015): 1M clothing images with labels from their shops' text (real noise), 14
classes, clean validation and test sets. The paper has no Clothing1M experiment; **every hyperparameter
here is aplx's choice**, not the authors': their WebVision recipe (the only ImageNet-scale setting they
published: ResNet-50, SGD nesterov 0.9, lr 0.4 at batch 512 decayed by 0.97 per epoch, weight decay
3e-5, gradient norm clipped at 5) for 120 epochs, with the loss hyperparameters of their CIFAR-10 configs
(the closest class count, K=10 vs 14), and the authors' Clothing1M loader from their dataset.py
(RandomResizedCrop 224, flip, RandomRotation 20, ColorJitter(0.4, 0.4, 0.4, 0.2), Cutout 112; eval
resize to 224x224). ResNet-50 is trained from scratch: aplx ships no ImageNet-pretrained weights,
which most Clothing1M papers start from, so numbers are not comparable with theirs.

  python -m aplx.data.prepare clothing1m --raw_dir /data/clothing1m
  python -m experiments.main --workdir runs/clothing1m_nce+rce \
      --config experiments/configs/clothing1m.py:loss=nce+rce

Each epoch reports test_acc on the clean test set and test_acc_clean_val on the clean validation set;
train_acc_clean is left out (most training images have no clean label; those that do are kept in the
dataset's `clean_label` for analysis, e.g. with experiments.predict).
"""

from experiments.configs import cifar10, common, webvision

LOSSES = {k: v for k, v in cifar10.LOSSES.items() if k != "nlnl"}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, noise="none")
  params = common.loss_params(LOSSES, args["loss"])
  params.update(common.fidelity_loss_params(args["loss"], args["fidelity"]))
  config = common.base_config(
    args,
    dataset="clothing1m",
    model="resnet50_imagenet",
    epochs=120,
    batch_size=512,
    loss_params=params,
    optim=webvision.OPTIM,  # The authors' WebVision recipe (module docstring).
  )
  config.eval_batch_size = 1024
  config.data_workers = 8
  return config
