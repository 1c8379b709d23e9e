"""Training panel: epochs, optimizer, learning rate and schedule (the [train] section)."""

from __future__ import annotations

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel


@register_panel(order=30)
class TrainPanel(RecipePanel):
    section_name = "train"
    title = "Training"
    description = ("How long and how the model is trained before it is measured. Set epochs to 0 to "
                   "evaluate and benchmark the model as it is.")

    def build(self) -> None:
        self.add_spin("epochs", "Epochs", "Passes over the training split. More epochs raise accuracy until it "
                      "plateaus, and cost proportionally more time. 0 skips training.", special="0 (no training)")
        self.add_choice("optimizer", "Optimizer", "AdamW converges quickly with little tuning; SGD with momentum "
                        "often generalises a little better but needs a tuned learning rate.",
                        labels={"sgd": "SGD (momentum, Nesterov)", "adam": "Adam", "adamw": "AdamW"})
        self.add_float_text("lr", "Learning rate", "Step size of the optimizer (e.g. 3e-3). Too high diverges "
                            "(loss becomes NaN), too low trains slowly.")
        self.add_choice("schedule", "LR schedule", "How the learning rate changes over training. One-cycle warms "
                        "up then anneals and usually trains fastest; cosine decays smoothly; step drops it in "
                        "stages; none keeps it constant.",
                        labels={"none": "constant", "cosine": "cosine decay", "step": "step decay",
                                "onecycle": "one-cycle"})
        self.add_float_text("weight_decay", "Weight decay", "Shrinks weights each step to reduce overfitting. "
                            "Too much underfits; 1e-4 to 5e-2 is typical.")
        self.add_double("momentum", "Momentum", "SGD momentum: averages gradients over steps for a smoother, "
                        "faster descent. Ignored by Adam/AdamW.", decimals=3, step=0.01)
        self.add_double("label_smoothing", "Label smoothing", "Trains towards slightly soft targets: reduces "
                        "over-confidence and can help accuracy; too much hurts calibration of easy classes.",
                        decimals=3, step=0.05)
        self.begin_group("Advanced")
        self.add_spin("seed", "Seed", "Random seed for weights and shuffling: the same seed gives comparable "
                      "runs, so a measured difference comes from the technique, not the luck of the draw.")
        self.add_spin("max_steps", "Max steps", "Stop after this many optimizer steps (quick experiments). "
                      "0 trains for the full number of epochs.", special="0 (no cap)")
        self.add_spin("log_every", "Report every", "Report loss and throughput every N steps. Smaller is "
                      "livelier but records more points.", suffix=" steps")

    def sync_states(self) -> None:
        sgd = self.widget("optimizer").currentData() == "sgd"
        self.widget("momentum").setEnabled(sgd)
