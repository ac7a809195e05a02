r"""CIFAR-100, Tables 2 and 3 of Ma et al. 2020: ResNet-50 (authors' code; the paper says ResNet-34),
200 epochs.

  python -m experiments.main --workdir runs/c100_nce+rce_sym0.6 \
      --config experiments/configs/cifar100.py:loss=nce+rce,noise=sym,rate=0.6

Argument keys as in mnist.py; fidelity=paper uses ResNet-34 and the paper's alpha=10, beta=0.1 for
every APL loss. Paper (mean of 3 seeds), e.g. sym 0.6: CE 22.15, NCE+RCE 47.12, NCE+MAE 48.06;
asym 0.4: CE 41.68, NCE+MAE 47.22. Every cell: experiments/configs/paper_tables.csv.
"""

from experiments.configs import common

# The authors' configs/cifar100/{sym,asym}/*.yaml (authors_hparams.csv). Their 'ngce+rce.yaml' builds
# NGCE+MAE (alpha 10, beta 0.1); here every name builds what it says.
LOSSES = {
  "ce": {},
  "fl": {"gamma": 0.5},
  "gce": {"q": 0.7},
  "sce": {"alpha": 6.0, "beta": 0.1},
  "nlnl": {"num_negatives": 110},
  "nce+mae": {"alpha": 10.0, "beta": 1.0},
  "nce+rce": {"alpha": 10.0, "beta": 0.1},
  "nfl+mae": {"alpha": 10.0, "beta": 1.0, "gamma": 0.5},
  "nfl+rce": {"alpha": 10.0, "beta": 0.1, "gamma": 0.5},
  "ngce+mae": {"alpha": 10.0, "beta": 1.0, "q": 0.7},
  "ngce+rce": {"alpha": 10.0, "beta": 0.1, "q": 0.7},
  # Single losses (Fig. 1/3 ablations): the authors' classes take a constant `scale`.
  "mae": {"scale": 1.0},
  "rce": {"scale": 1.0},
  "nce": {"scale": 1.0},
  "nfl": {"scale": 1.0, "gamma": 0.5},
  "ngce": {"scale": 1.0, "q": 0.7},
}
ASYM = {}
PAPER_APL = {"alpha": 10.0, "beta": 0.1}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg)
  loss, paper = args["loss"], args["fidelity"] == "paper"
  params = common.loss_params(LOSSES, loss, args["noise"], ASYM)
  if paper and "+" in loss and loss != "sce":
    params.update(PAPER_APL)
  params.update(common.fidelity_loss_params(loss, args["fidelity"]))
  config = common.base_config(
    args,
    dataset="cifar100",
    model="resnet34" if paper else "resnet50",
    epochs=200,
    batch_size=128,
    loss_params=params,
    optim={
      "lr": 0.1,
      "momentum": 0.9,
      "nesterov": False,
      "weight_decay": 1e-5,
      "grad_clip": 5.0,
      "schedule": "cosine",
      "eta_min": 0.0,
      "decay_rate": 0.0,
    },
  )
  if not paper:
    config.noise.options = common.authors_noise_options(args["noise"], "cifar100")
  if args["loss"] == "nlnl" and args["fidelity"] == "authors":
    # The authors train their single-stage NLNL this long.
    config.epochs = 2000 if args["epochs"] is None else args["epochs"]
  if args["loss"] in common.ANL_LOSSES:
    common.apply_anl(config, "cifar100")
  return config
