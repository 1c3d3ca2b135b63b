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


# Status words: labels are FEDn's wire values, so the admin, the API and the CLI use one word.
class ControllerStateValue(models.TextChoices):
    SETUP = "setup", "setup"
    IDLE = "idle", "idle"
    INSTRUCTING = "instructing", "instructing"
    MONITORING = "monitoring", "monitoring"


class StatusType(models.TextChoices):
    LOG = "LOG", "LOG"
    MODEL_UPDATE_REQUEST = "MODEL_UPDATE_REQUEST", "MODEL_UPDATE_REQUEST"
    MODEL_UPDATE = "MODEL_UPDATE", "MODEL_UPDATE"
    MODEL_VALIDATION_REQUEST = "MODEL_VALIDATION_REQUEST", "MODEL_VALIDATION_REQUEST"
    MODEL_VALIDATION = "MODEL_VALIDATION", "MODEL_VALIDATION"
    INFERENCE = "INFERENCE", "INFERENCE"


class LogLevel(models.TextChoices):
    INFO = "INFO", "INFO"
    DEBUG = "DEBUG", "DEBUG"
    WARNING = "WARNING", "WARNING"
    ERROR = "ERROR", "ERROR"
    AUDIT = "AUDIT", "AUDIT"


class Role(models.TextChoices):
    WORKER = "WORKER", "WORKER"
    COMBINER = "COMBINER", "COMBINER"
    REDUCER = "REDUCER", "REDUCER"
    OTHER = "OTHER", "OTHER"


class SessionStep(models.TextChoices):
    PENDING = "pending", "Waiting to start"
    NEXT_ROUND = "next_round", "Starting the next round"
    STARTING = "starting", "Sending the round to combiners"
    TRAINING = "training", "Waiting for combiner reports"
    REDUCING = "reducing", "Combining the combiners' models"
    VALIDATING = "validating", "Waiting for validations"
    DONE = "done", "Done"
