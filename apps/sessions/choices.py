from django.db import models


class SessionStatus(models.TextChoices):
    CREATED = "Created", "Created"
    INITIALIZED = "Initialized", "Initialized"
    STARTED = "Started", "Started"
    STOPPING = "Stopping", "Stopping"
    FINISHED = "Finished", "Finished"
    STOPPED = "Stopped", "Stopped"
    FAILED = "Failed", "Failed"


# A session in one of these holds the federation: no other may start, its package and seed stay put.
ACTIVE_SESSION_STATUSES = (SessionStatus.INITIALIZED, SessionStatus.STARTED, SessionStatus.STOPPING)
# A session in one of these is over for good.
FINAL_SESSION_STATUSES = (SessionStatus.FINISHED, SessionStatus.STOPPED, SessionStatus.FAILED)


class RoundStatus(models.TextChoices):
    PENDING = "Pending", "Pending"
    SUCCESS = "Success", "Success"
    FINISHED = "Finished", "Finished"
    FAILED = "Failed", "Failed"
    STOPPED = "Stopped", "Stopped"


class ControllerStateValue(models.TextChoices):
    SETUP = "setup", "Setup"
    IDLE = "idle", "Idle"
    INSTRUCTING = "instructing", "Instructing"
    MONITORING = "monitoring", "Monitoring"


class StatusType(models.TextChoices):
    LOG = "LOG", "Log"
    MODEL_UPDATE_REQUEST = "MODEL_UPDATE_REQUEST", "Model update request"
    MODEL_UPDATE = "MODEL_UPDATE", "Model update"
    MODEL_VALIDATION_REQUEST = "MODEL_VALIDATION_REQUEST", "Model validation request"
    MODEL_VALIDATION = "MODEL_VALIDATION", "Model validation"
    INFERENCE = "INFERENCE", "Inference"


class LogLevel(models.TextChoices):
    INFO = "INFO", "Info"
    DEBUG = "DEBUG", "Debug"
    WARNING = "WARNING", "Warning"
    ERROR = "ERROR", "Error"
    AUDIT = "AUDIT", "Audit"


class Role(models.TextChoices):
    WORKER = "WORKER", "Worker"
    COMBINER = "COMBINER", "Combiner"
    REDUCER = "REDUCER", "Reducer"
    OTHER = "OTHER", "Other"


class SessionStep(models.TextChoices):
    PENDING = "pending", "Waiting to start"
    NEXT_ROUND = "next_round", "Starting the next round"
    STARTING = "starting", "Sending the round to combiners"
    TRAINING = "training", "Waiting for combiner reports"
    REDUCING = "reducing", "Combining the combiners' models"
    VALIDATING = "validating", "Waiting for validations"
    DONE = "done", "Done"
