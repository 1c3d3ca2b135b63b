from apps.models.models import Model
from controlplane.api.filters import FednDateTimeFilter, FednFilter, FednFilterSet, add_aliases


class ModelFilterSet(FednFilterSet):
    model = FednFilter(field_name="model_id")
    parent_model = FednFilter(field_name="parent_id")
    session_id = FednFilter()
    committed_at = FednDateTimeFilter()

    class Meta:
        model = Model
        fields: list[str] = []


add_aliases(ModelFilterSet, {"parentModel": "parent_model", "sessionId": "session_id", "model_id": "model"})
