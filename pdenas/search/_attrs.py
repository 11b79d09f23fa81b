"""Names under which a pdenas study stores its data in Optuna (one place, shared by search and report).

Study user attributes:
    CONFIG     the resolved search configuration (dict, see ``SearchConfig.to_dict``): model spec,
               dataset, search space, budget, objectives, constraints, sampler, seed, trials.
    VERSIONS   {"pdenas": ..., "torch": ..., "optuna": ...} of the process that created the study.
    FORMAT     integer version of this layout (FORMAT_VERSION).
    ORIGINAL   cost of the original model: {"params", "macs", "conv_macs", "latency_ms"}.

Trial user attributes (every trial that got as far as building its candidate):
    PLAN       the CompressionPlan as a dict (``CompressionPlan.to_dict``).
    PLAN_TEXT  the plan in words (``CompressionPlan.describe``).
    ACCURACY   validation accuracy in [0, 1] (absent when untrained).
    MACS, CONV_MACS, PARAMS   cost of the candidate (``pdenas.cost.profile``), per sample.
    LATENCY_MS median inference latency in milliseconds (batch 1), when measured.
    TRAIN_TIME seconds spent training; EVAL_TIME seconds evaluating; WALL_TIME whole trial.
    EPOCHS     epochs run; SEED the trial's training seed.
    REFERENCE  True on the original model's trial (the identity plan).
    FEASIBLE   False when the candidate broke a constraint (then untrained, ACCURACY absent,
               objective accuracy recorded as 0.0, and Optuna constraints > 0); the original
               model's trial is trained even when it breaks a constraint.
    REUSED_FROM  trial number whose result an identical plan reused.
    RETRY_OF   trial number this trial re-runs (after a crash or a stale heartbeat).
    FAILURE    one-line reason, on FAIL trials.

Objective values are in the order of CONFIG["objectives"], e.g. ["accuracy", "macs"] with
directions ["maximize", "minimize"].
"""

FORMAT_VERSION = 1

CONFIG = "pdenas.config"
VERSIONS = "pdenas.versions"
FORMAT = "pdenas.format"
ORIGINAL = "pdenas.original"

PLAN = "plan"
PLAN_TEXT = "plan_text"
ACCURACY = "accuracy"
MACS = "macs"
CONV_MACS = "conv_macs"
PARAMS = "params"
LATENCY_MS = "latency_ms"
TRAIN_TIME = "train_time"
EVAL_TIME = "eval_time"
WALL_TIME = "wall_time"
EPOCHS = "epochs"
SEED = "seed"
REFERENCE = "reference"
FEASIBLE = "feasible"
REUSED_FROM = "reused_from"
RETRY_OF = "retry_of"
FAILURE = "failure"

OBJECTIVE_DIRECTIONS = {"accuracy": "maximize", "macs": "minimize", "params": "minimize", "latency": "minimize"}
# the user attribute holding each objective's value
OBJECTIVE_ATTRS = {"accuracy": ACCURACY, "macs": MACS, "params": PARAMS, "latency": LATENCY_MS}
WORKER = "worker"  # "host:pid" of the process that ran the trial
PROGRESS = "progress"  # [epoch done, epochs] while training
