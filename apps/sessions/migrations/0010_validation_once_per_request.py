from django.db import migrations, models
from django.db.models import Min


def drop_resent_validations(apps, schema_editor) -> None:
    """Keep the first of each (sender, model, request): the others are a combiner's resends."""
    validation = apps.get_model("fl_sessions", "Validation")
    repeated = (
        validation.objects.exclude(correlation_id="")
        .values("sender_name", "model_id", "correlation_id")
        .annotate(first=Min("id"), copies=models.Count("id"))
        .filter(copies__gt=1)
    )
    for group in repeated.iterator():
        validation.objects.filter(
            sender_name=group["sender_name"],
            model_id=group["model_id"],
            correlation_id=group["correlation_id"],
        ).exclude(id=group["first"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("fl_sessions", "0009_session_wake_chain"),
    ]

    operations = [
        migrations.RunPython(drop_resent_validations, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="validation",
            constraint=models.UniqueConstraint(
                condition=~models.Q(correlation_id=""),
                fields=("sender_name", "model_id", "correlation_id"),
                name="validation_once_per_request",
            ),
        ),
    ]
